"""The routing rules operators and the autopilot change the traffic with (core/routing.py)."""

from __future__ import annotations

import pytest

from core.errors import ChatloopError, Conflict, NotFound
from core.routing import Routing, promote, retire, rollback, routed_version, user_point

STATES = {"v1": "candidate", "v2": "candidate", "v3": "rejected"}


def test_promote_to_active_keeps_the_old_one_for_rollback() -> None:
    first = promote(Routing(), STATES, "v1", None)
    assert first.routing.active == "v1" and first.routing.history == ["base"] and first.states == {"v1": "active"}
    second = promote(first.routing, {**STATES, "v1": "active"}, "v2", None)
    assert second.routing.active == "v2" and second.routing.history == ["base", "v1"]
    assert second.states == {"v2": "active", "v1": "retired"}
    assert second.routing.revision == first.routing.revision + 1


def test_canary_then_promotion_clears_the_canary() -> None:
    canary = promote(Routing(), STATES, "v1", 25.0)
    assert (canary.routing.active, canary.routing.canary, canary.routing.canary_percent) == ("base", "v1", 25.0)
    assert canary.states == {"v1": "canary"}
    active = promote(canary.routing, {**STATES, "v1": "canary"}, "v1", None)
    assert active.routing.canary is None and active.routing.canary_percent == 0 and active.routing.active == "v1"


def test_a_new_canary_retires_the_old_one() -> None:
    routing = promote(Routing(), STATES, "v1", 10.0).routing
    replaced = promote(routing, {**STATES, "v1": "canary"}, "v2", 30.0)
    assert replaced.routing.canary == "v2" and replaced.states == {"v2": "canary", "v1": "retired"}


def test_rollback_ends_the_canary_first_then_walks_the_history() -> None:
    routing = promote(Routing(), STATES, "v1", None).routing
    routing = promote(routing, {**STATES, "v1": "active"}, "v2", 50.0).routing
    ended = rollback(routing)
    assert ended.routing.canary is None and ended.routing.active == "v1" and ended.states == {"v2": "retired"}
    back = rollback(ended.routing)
    assert back.routing.active == "base" and back.routing.history == [] and back.states == {"v1": "retired"}
    with pytest.raises(Conflict):
        rollback(back.routing)


@pytest.mark.parametrize(
    ("version", "percent", "error"),
    [("v9", None, NotFound), ("v3", None, Conflict), ("base", None, Conflict), ("base", 10.0, Conflict)],
)
def test_promotions_that_are_refused(version: str, percent: float | None, error: type[ChatloopError]) -> None:
    with pytest.raises(error):
        promote(Routing(), STATES, version, percent)


def test_retire_refuses_the_active_version_and_ends_a_canary() -> None:
    routing = promote(Routing(), STATES, "v1", None).routing
    with pytest.raises(Conflict):
        retire(routing, {**STATES, "v1": "active"}, "v1")
    routing = promote(routing, {**STATES, "v1": "active"}, "v2", 20.0).routing
    retired = retire(routing, {**STATES, "v1": "active", "v2": "canary"}, "v2")
    assert retired.routing.canary is None and retired.states == {"v2": "retired"}


def test_retiring_a_former_active_version_removes_it_from_the_rollback_history() -> None:
    routing = promote(Routing(), STATES, "v1", None).routing
    routing = promote(routing, {**STATES, "v1": "active"}, "v2", None).routing
    retired = retire(routing, {"v1": "retired", "v2": "active"}, "v1")
    assert retired.routing.history == ["base"]


def test_the_split_is_sticky_and_close_to_the_percentage() -> None:
    routing = Routing(active="v1", canary="v2", canary_percent=20.0)
    users = [f"user-{i}" for i in range(5000)]
    first = [routed_version(routing, user) for user in users]
    assert first == [routed_version(routing, user) for user in users]
    share = first.count("v2") / len(users)
    assert 0.18 < share < 0.22
    wider = Routing(active="v1", canary="v2", canary_percent=40.0)
    assert all(routed_version(wider, u) == "v2" for u, v in zip(users, first, strict=True) if v == "v2")
    assert all(0 <= user_point(user) < 100 for user in users[:100])
