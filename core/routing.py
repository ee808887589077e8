"""Which policy version serves whom, and how operators change it: pure rules, stored by ``core.registry``.

The routing is one small record: the active version (served with merged weights), an optional canary with the
share of users it reaches, and the former active versions that a rollback returns to. Every change is a
``Transition`` computed here from the current routing and versions, then applied by the registry in one Redis
transaction, so that these rules can be read and tested without Redis.

A user's share is sticky: a keyed hash of the canary and the user's id (``core/keyed_ids.py``) puts each user at a
fixed point in [0, 100), and the canary serves the users below its percentage, so a user sees one version for as
long as the canary runs, and raising the percentage only adds users. Each canary runs in its own period, named by
the canary and the revision that made it the canary: its votes are counted there (``feedback/canary.py``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from core.errors import Conflict, NotFound
from core.policy import BASE_VERSION

MAX_HISTORY = 16
"""Former active versions kept for rollback."""

PROMOTABLE = {"candidate", "canary", "retired"}


class Routing(BaseModel):
    revision: int = 0
    """Raised by every change: a server whose revision matches has nothing to do."""
    active: str = BASE_VERSION
    canary: str | None = None
    canary_percent: float = Field(0.0, ge=0, le=100)
    history: list[str] = Field(default_factory=list)
    """Former active versions, most recent last."""
    canary_since: int = 0
    """The revision that made the current canary the canary."""
    epoch: str = ""
    """Names this routing's line of revisions; set by its first change. A routing written anew after the store lost
    its data starts another line, whose revisions a server must apply although they are lower."""

    def supersedes(self, applied: Routing) -> bool:
        """Whether a server that applied ``applied`` must apply this routing: a later revision of the same line, or
        another line. An earlier revision (a read overtaken by a newer one) is never applied over a newer."""
        return self.epoch != applied.epoch or self.revision > applied.revision

    @property
    def canary_period(self) -> str | None:
        """Names the current canary's period; a canary's share may change within it, a new canary starts another."""
        return None if self.canary is None else f"{self.canary}.{self.canary_since}"


def routed_version(routing: Routing, split_point: float) -> str:
    """The version for a user at ``split_point`` in [0, 100) of the current canary's split."""
    if routing.canary is not None and split_point < routing.canary_percent:
        return routing.canary
    return routing.active


@dataclass
class Transition:
    """A routing change and the version states it sets, with the reason recorded in each version's audit."""

    routing: Routing
    states: dict[str, str] = field(default_factory=dict)


def _conflict(message: str) -> Conflict:
    return Conflict(message, code="invalid_state")


def _not_found(version: str) -> NotFound:
    return NotFound(f"No policy version '{version}'.", param="version", code="version_not_found")


def _next(routing: Routing, **changes: object) -> Routing:
    epoch = routing.epoch or uuid.uuid4().hex
    return routing.model_copy(update={"revision": routing.revision + 1, "epoch": epoch, **changes})


def promote(routing: Routing, states: dict[str, str], version: str, canary_percent: float | None) -> Transition:
    """Make ``version`` the canary for ``canary_percent`` of users, or (without a percentage) the active version.

    A new canary replaces the old one, which is retired. The active version it replaces goes to the rollback
    history. ``base`` (the model with no adapter) can always be made active again; it is never a canary.
    """
    if version != BASE_VERSION and version not in states:
        raise _not_found(version)
    if version != BASE_VERSION and states[version] not in PROMOTABLE:
        raise _conflict(f"Version '{version}' is {states[version]} and cannot be promoted.")
    if version == routing.active:
        raise _conflict(f"Version '{version}' is already active.")
    if canary_percent is not None:
        if version == BASE_VERSION:
            raise _conflict("The base model cannot be a canary; promote it without a percentage.")
        changed = {version: "canary"}
        if routing.canary not in (None, version):
            changed[routing.canary] = "retired"
        since = routing.canary_since if routing.canary == version else routing.revision + 1
        return Transition(_next(routing, canary=version, canary_percent=canary_percent, canary_since=since), changed)
    changed = {version: "active"} if version != BASE_VERSION else {}
    if routing.active != BASE_VERSION:
        changed[routing.active] = "retired"
    canary = None if routing.canary == version else routing.canary
    history = [*routing.history, routing.active][-MAX_HISTORY:]
    update = {"active": version, "canary": canary, "canary_percent": routing.canary_percent if canary else 0.0}
    return Transition(_next(routing, history=history, **update), changed)


def rollback(routing: Routing) -> Transition:
    """Undo the last step: end the canary if there is one, else return to the previous active version."""
    if routing.canary is not None:
        return Transition(_next(routing, canary=None, canary_percent=0.0), {routing.canary: "retired"})
    if not routing.history:
        raise _conflict("There is nothing to roll back to.")
    previous = routing.history[-1]
    changed = {previous: "active"} if previous != BASE_VERSION else {}
    if routing.active != BASE_VERSION:
        changed[routing.active] = "retired"
    return Transition(_next(routing, active=previous, history=routing.history[:-1]), changed)


def retire(routing: Routing, states: dict[str, str], version: str) -> Transition:
    """Take a version out of service; the active version must be replaced first (promote or roll back)."""
    if version not in states:
        raise _not_found(version)
    if version == routing.active:
        raise _conflict(f"Version '{version}' is active: promote another version or roll back first.")
    if states[version] in ("retired", "rejected") and version not in routing.history:
        raise _conflict(f"Version '{version}' is already {states[version]}.")
    history = [v for v in routing.history if v != version]
    if routing.canary == version:
        return Transition(_next(routing, canary=None, canary_percent=0.0, history=history), {version: "retired"})
    return Transition(_next(routing, history=history), {version: "retired"})
