"""The rollout steps the server takes on its own: roll back a canary that users like less, and (when configured)
canary each new candidate and promote a canary that did well enough.

A canary is rolled back when its thumbs-down rate (per answer served) is higher than the active version's with
the configured confidence, by a one-sided two-proportion z-test, once both have served enough answers. Every
replica runs this; the registry's transactions make each step happen once, and the audit trail records it with
its statistics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import redis
import redis.asyncio as aioredis

from core.config import RolloutSettings
from core.policy import version_order
from core.registry import Registry
from core.routing import Routing, Transition, promote, rollback
from feedback.stats import COUNTERS, compare_rates, read_counters

log = logging.getLogger(__name__)

WHO = "autopilot"


Plan = Callable[[Routing, dict[str, str]], Transition]
"""What ``Registry.change`` applies: a transition computed from the current routing and version states."""


@dataclass
class Step:
    plan: Plan
    why: str


def _counts(counters: dict[str, dict[str, int]], version: str) -> dict[str, int]:
    return counters.get(version, dict.fromkeys(COUNTERS, 0))


def decide(
    routing: Routing,
    states: dict[str, str],
    parents: dict[str, str],
    counters: dict[str, dict[str, int]],
    settings: RolloutSettings,
) -> Step | None:
    """The one step to take now, if any. ``parents`` maps each version to the one it was trained from."""
    if routing.canary is not None:
        canary, active = _counts(counters, routing.canary), _counts(counters, routing.active)
        minimum = settings.rollback_min_answers
        if canary["served"] >= minimum and active["served"] >= minimum:
            test = compare_rates(canary["down"], canary["served"], active["down"], active["served"])
            if test.p_value < 1 - settings.rollback_confidence:
                why = (
                    f"thumbs-down rate {test.a.rate:.3f} over {test.a.trials} answers against the active version's "
                    f"{test.b.rate:.3f} over {test.b.trials}: z={test.z:.2f}, one-sided p={test.p_value:.4f}"
                )
                return Step(_rollback, why)
            if settings.auto_promote and canary["served"] >= settings.promote_min_answers:
                why = f"served {canary['served']} answers, thumbs-down not worse (one-sided p={test.p_value:.3f})"
                return Step(partial(_promote, version=routing.canary, percent=None), why)
        return None
    if settings.auto_canary:
        newest = _newest_candidate(states, parents, routing)
        if newest is not None:
            why = f"new candidate, canary for {settings.auto_canary_percent:g}% of users"
            return Step(partial(_promote, version=newest, percent=settings.auto_canary_percent), why)
    return None


def _rollback(routing: Routing, states: dict[str, str]) -> Transition:
    return rollback(routing)


def _promote(routing: Routing, states: dict[str, str], *, version: str, percent: float | None) -> Transition:
    return promote(routing, states, version, percent)


def _newest_candidate(states: dict[str, str], parents: dict[str, str], routing: Routing) -> str | None:
    """The newest candidate trained from the active version. An older candidate an operator left is left, and so
    is one trained from another version: from a canary that was rolled back, whose faults it may have inherited
    (the trainer continues the canary, ``core/registry.py: parent_for_training``)."""
    candidates = [v for v, state in states.items() if state == "candidate" and parents.get(v) == routing.active]
    return max(candidates, key=version_order, default=None)


def step_once(client: redis.Redis, counters: dict[str, dict[str, int]], settings: RolloutSettings) -> str | None:
    """Take the step due now, if any; what was done, for the log."""
    registry = Registry(client)
    versions = registry.all()  # one read for both: this runs every few seconds on every replica
    states, parents = {v.id: v.state for v in versions}, {v.id: v.parent for v in versions}
    step = decide(registry.routing(), states, parents, counters, settings)
    if step is None:
        return None

    def plan(routing: Routing, states: dict[str, str]) -> Transition:
        again = decide(routing, states, parents, counters, settings)  # another replica may have acted meanwhile
        if again is None or again.why != step.why:
            raise _NothingToDo
        return step.plan(routing, states)

    try:
        registry.change(plan, who=WHO, why=step.why)
    except _NothingToDo:
        return None
    return step.why


class _NothingToDo(Exception):
    pass


async def check(client: redis.Redis, stats_client: aioredis.Redis, settings: RolloutSettings) -> None:
    """Take the step due now, if any (run every ``reconcile_seconds`` by the server)."""
    done = await asyncio.to_thread(step_once, client, await read_counters(stats_client), settings)
    if done is not None:
        log.info("autopilot step", extra={"why": done})
