"""The rollout steps the server takes on its own: roll back a canary that users like less, and (when configured) canary
each new candidate and promote a canary that did well enough.

A canary is rolled back when its thumbs-down rate (per answer served) is higher than the active version's with the
configured confidence, by a one-sided sequential test that stays valid although it is read every reconcile period
(``feedback/sequential_test.py``), once both have served enough answers to enough distinct users. The counts are
those of the canary's own period, routed answers that may be training data only (``feedback/canary.py``): nobody can
steer the decision by pinning the canary, choosing a side of the split, or answers from before the canary ran. Every
replica runs this; the registry's transactions make each step happen once, and the audit trail records it with the
counts it used.
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
from feedback.canary import PeriodCounts, read_period
from feedback.sequential_test import worse_rate

log = logging.getLogger(__name__)

WHO = "autopilot"


Plan = Callable[[Routing, dict[str, str]], Transition]
"""What ``Registry.change`` applies: a transition computed from the current routing and version states."""


@dataclass
class Step:
    plan: Plan
    why: str


def _enough(counts: PeriodCounts, answers: int, settings: RolloutSettings) -> bool:
    return counts.served >= answers and counts.users >= settings.min_canary_users


def _described(name: str, counts: PeriodCounts) -> str:
    return f"{name} {counts.down} down of {counts.served} answers to {counts.users} users"


def decide(
    routing: Routing,
    states: dict[str, str],
    parents: dict[str, str],
    period: dict[str, PeriodCounts],
    settings: RolloutSettings,
) -> Step | None:
    """The one step to take now, if any. ``parents`` maps each version to the one it was trained from; ``period``
    holds the counts of the current canary period."""
    if routing.canary is not None:
        canary, active = period.get(routing.canary, PeriodCounts()), period.get(routing.active, PeriodCounts())
        minimum = settings.rollback_min_answers
        if _enough(canary, minimum, settings) and _enough(active, minimum, settings):
            test = worse_rate(canary.down, canary.served, active.down, active.served)
            counts = f"{_described('canary', canary)}, {_described('active', active)}"
            if test.p_value < 1 - settings.rollback_confidence:
                why = f"thumbs-down rate higher: {counts}; mSPRT likelihood ratio {test.likelihood_ratio:.3g}"
                return Step(_rollback, f"{why}, always-valid p={test.p_value:.4f}")
            if settings.auto_promote and _enough(canary, settings.promote_min_answers, settings):
                why = f"thumbs-down rate not shown worse: {counts}; always-valid p={test.p_value:.3f}"
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


def step_once(
    client: redis.Redis, routing: Routing, period: dict[str, PeriodCounts], settings: RolloutSettings
) -> str | None:
    """Take the step due now, if any, given the routing the period's counts were read for; what was done, for the
    log."""
    registry = Registry(client)
    versions = registry.all()  # one read for both: this runs every few seconds on every replica
    states, parents = {v.id: v.state for v in versions}, {v.id: v.parent for v in versions}
    step = decide(routing, states, parents, period, settings)
    if step is None:
        return None

    def plan(current: Routing, states: dict[str, str]) -> Transition:
        again = decide(current, states, parents, period, settings)  # another replica may have acted meanwhile
        if current.canary_period != routing.canary_period or again is None or again.why != step.why:
            raise _NothingToDo
        return step.plan(current, states)

    try:
        registry.change(plan, who=WHO, why=step.why)
    except _NothingToDo:
        return None
    return step.why


class _NothingToDo(Exception):
    pass


async def check(client: redis.Redis, stats_client: aioredis.Redis, settings: RolloutSettings) -> None:
    """Take the step due now, if any (run every ``reconcile_seconds`` by the server)."""
    routing = await asyncio.to_thread(Registry(client).routing)
    period = routing.canary_period
    counts = {} if period is None else await read_period(stats_client, period, [routing.active, routing.canary])
    done = await asyncio.to_thread(step_once, client, routing, counts, settings)
    if done is not None:
        log.info("autopilot step", extra={"why": done})
