"""The routing rules operators and the autopilot change the traffic with (core/routing.py)."""

from __future__ import annotations

import pytest

from core.errors import ChatloopError, Conflict, NotFound
from core.keyed_ids import KeyedIds
from core.routing import Routing, promote, retire, rollback, routed_version

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
    ids = KeyedIds(b"a secret")
    routing = promote(Routing(active="v1"), {"v1": "active", "v2": "candidate"}, "v2", 20.0).routing
    users = [f"user-{i}" for i in range(5000)]

    def sides(routing: Routing) -> list[str]:
        return [routed_version(routing, ids.split_point(routing.canary, user)) for user in users]

    first = sides(routing)
    assert first == sides(routing)
    assert 0.18 < first.count("v2") / len(users) < 0.22
    wider = promote(routing, {"v1": "active", "v2": "canary"}, "v2", 40.0).routing
    assert wider.canary_period == routing.canary_period, "a wider share is the same canary period"
    assert all(v == "v2" for v, was in zip(sides(wider), first, strict=True) if was == "v2")
    assert all(0 <= ids.split_point("v2", user) < 100 for user in users[:100])


def test_each_canary_draws_its_users_afresh_and_only_the_secret_knows_whom() -> None:
    """A caller who could compute the split could pick ids that land on the side he wants; and a canary that always
    got the same few users would be judged by them alone."""
    users = [f"user-{i}" for i in range(2000)]
    on = lambda ids, canary: {u for u in users if ids.split_point(canary, u) < 50}  # noqa: E731
    ids = KeyedIds(b"a secret")
    assert len(on(ids, "v2") & on(ids, "v3")) < 0.6 * len(on(ids, "v2"))
    assert len(on(ids, "v2") & on(KeyedIds(b"another"), "v2")) < 0.6 * len(on(ids, "v2"))


def test_a_new_canary_starts_a_new_period() -> None:
    states = {"v1": "active", "v2": "candidate", "v3": "candidate"}
    first = promote(Routing(active="v1"), states, "v2", 10.0).routing
    second = promote(first, {**states, "v2": "canary"}, "v3", 10.0).routing
    assert first.canary_period == "v2.1" and second.canary_period == "v3.2"
    assert rollback(second).routing.canary_period is None


def test_a_server_applies_newer_routing_never_an_overtaken_read_and_a_routing_written_anew_whatever_its_revision():
    never_applied = Routing(revision=-1)
    nothing_stored = Routing()
    assert nothing_stored.supersedes(never_applied)
    first = promote(nothing_stored, STATES, "v1", 10.0).routing
    second = promote(first, {**STATES, "v1": "canary"}, "v1", None).routing
    assert first.epoch and second.epoch == first.epoch, "one line of revisions keeps its epoch"
    assert second.supersedes(first) and not first.supersedes(second), "an overtaken read is not applied"
    assert not second.supersedes(second)
    lost = Routing()  # the store lost its data: nothing stored, then a routing written anew from nothing
    assert lost.supersedes(second)
    anew = promote(lost, STATES, "v2", None).routing
    assert anew.revision < second.revision and anew.epoch != second.epoch
    assert anew.supersedes(second)
