"""The automatic rollout steps (server/versions/autopilot.py); the test behind the rollback is
tests/unit/test_sequential_test.py's."""

from __future__ import annotations

from core.config import RolloutSettings
from core.routing import Routing
from feedback.canary import PeriodCounts
from server.versions.autopilot import decide


def counts(served: int, down: int, users: int = 50) -> PeriodCounts:
    return PeriodCounts(served=served, down=down, users=users)


CANARY = Routing(active="v1", canary="v2", canary_percent=20.0, history=["base"])
STATES = {"v1": "active", "v2": "canary"}
PARENTS = {"v1": "base", "v2": "v1"}


def test_a_clearly_worse_canary_is_rolled_back_with_its_statistics() -> None:
    step = decide(CANARY, STATES, PARENTS, {"v1": counts(100, 10), "v2": counts(60, 30)}, RolloutSettings())
    assert step is not None and "always-valid p=" in step.why
    assert "canary 30 down of 60 answers to 50 users" in step.why, "the audit trail shows the counts it used"
    transition = step.plan(CANARY, STATES)
    assert transition.routing.canary is None and transition.states == {"v2": "retired"}


def test_no_verdict_on_a_small_sample() -> None:
    settings = RolloutSettings(rollback_min_answers=20)
    assert decide(CANARY, STATES, PARENTS, {"v1": counts(100, 10), "v2": counts(19, 19)}, settings) is None


def test_no_verdict_until_enough_distinct_users_on_each_side() -> None:
    """One caller's many answers are one caller's opinion, however many thumbs-down it gives."""
    settings = RolloutSettings(rollback_min_answers=20, min_canary_users=5)
    assert decide(CANARY, STATES, PARENTS, {"v1": counts(100, 10), "v2": counts(60, 60, users=4)}, settings) is None
    assert decide(CANARY, STATES, PARENTS, {"v1": counts(100, 10, users=4), "v2": counts(60, 60)}, settings) is None
    assert decide(CANARY, STATES, PARENTS, {"v1": counts(100, 10, users=5), "v2": counts(60, 60, users=5)}, settings)
    promote = RolloutSettings(auto_promote=True, promote_min_answers=50, min_canary_users=5)
    assert decide(CANARY, STATES, PARENTS, {"v1": counts(100, 20), "v2": counts(50, 9, users=4)}, promote) is None


def test_a_canary_that_is_not_worse_is_promoted_only_when_configured() -> None:
    stats = {"v1": counts(100, 20), "v2": counts(50, 9)}
    assert decide(CANARY, STATES, PARENTS, stats, RolloutSettings()) is None
    step = decide(CANARY, STATES, PARENTS, stats, RolloutSettings(auto_promote=True, promote_min_answers=50))
    assert step is not None and step.plan(CANARY, STATES).routing.active == "v2"


def test_the_newest_candidate_becomes_the_canary_when_configured() -> None:
    routing = Routing(active="v1", history=["base"])
    states = {"v1": "active", "v2": "candidate", "v3": "candidate", "v4": "rejected"}
    parents = {"v1": "base", "v2": "v1", "v3": "v1", "v4": "v1"}
    assert decide(routing, states, parents, {}, RolloutSettings()) is None
    step = decide(routing, states, parents, {}, RolloutSettings(auto_canary=True, auto_canary_percent=30))
    assert step is not None
    transition = step.plan(routing, states)
    assert transition.routing.canary == "v3" and transition.routing.canary_percent == 30


def test_an_old_candidate_is_left_alone() -> None:
    routing = Routing(active="v5", history=["base"])
    states, parents = {"v2": "candidate", "v5": "active"}, {"v2": "base", "v5": "base"}
    assert decide(routing, states, parents, {}, RolloutSettings(auto_canary=True)) is None


def test_a_candidate_trained_from_a_rolled_back_canary_is_not_rolled_out() -> None:
    routing = Routing(active="v2", history=["base", "v1"])
    states = {"v1": "retired", "v2": "active", "v3": "retired", "v4": "candidate", "v5": "candidate"}
    parents = {"v1": "base", "v2": "v1", "v3": "v2", "v4": "v3", "v5": "v2"}
    step = decide(routing, states, parents, {}, RolloutSettings(auto_canary=True))
    assert step is not None and step.plan(routing, states).routing.canary == "v5"
    del states["v5"]
    assert decide(routing, states, parents, {}, RolloutSettings(auto_canary=True)) is None
