"""The policy registry in Redis: every version, its state, lineage, metrics and audit trail.

The trainer registers versions (``candidate`` when the gate passed, ``rejected`` when not); operators move them
(``canary``, ``active``, ``retired``); the server reads the registry at start and is told of every change on the
pub/sub channel ``chatloop:registry``. Ids are ``v1``, ``v2``, ... from one counter; ``base`` (the model with no
adapter) is the root of every lineage and is never stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Literal

import redis
from pydantic import BaseModel, Field

from core import keys
from core.contention import attempts
from core.errors import NotFound
from core.policy import version_order
from core.routing import Routing, Transition

State = Literal["candidate", "canary", "active", "retired", "rejected"]


class AuditEntry(BaseModel):
    at: float
    who: str
    state: State
    why: str


class Version(BaseModel):
    id: str
    parent: str
    state: State
    artifact: str
    """The version's folder: adapter, reward model, hyperparameters, metrics, pair ids."""
    created: float
    metrics: dict[str, object] = Field(default_factory=dict)
    gate: dict[str, object] = Field(default_factory=dict)
    audit: list[AuditEntry] = Field(default_factory=list)
    pinnable: bool = False
    """An admin let every caller pin it (``chatloop@vN``); others may pin only the active version and the canary."""
    erased_pairs: int = 0
    """How many of the pairs it was trained on were erased since (``feedback/erasure.py``): an operator may want to
    retire it."""


_NEXT_NUMBER = """
local n = redis.call('INCR', KEYS[1])
if n <= tonumber(ARGV[1]) then
  n = tonumber(ARGV[1]) + 1
  redis.call('SET', KEYS[1], n)
end
return n
"""


class Registry:
    def __init__(self, client: redis.Redis):
        self.client = client
        self._next_number = client.register_script(_NEXT_NUMBER)

    def next_id(self, above: int = 0) -> str:
        """A new version id, numbered past ``above`` too: the highest version found on disk, which a counter
        restarted by a Redis that lost its data would otherwise hand out again."""
        return f"v{self._next_number(keys=[keys.VERSION_SEQUENCE], args=[above])}"

    def get(self, version_id: str) -> Version | None:
        raw = self.client.hget(keys.VERSIONS, version_id)
        return None if raw is None else Version.model_validate_json(raw)

    def all(self) -> list[Version]:
        versions = [Version.model_validate_json(raw) for raw in self.client.hvals(keys.VERSIONS)]
        return sorted(versions, key=lambda v: version_order(v.id))

    def routing(self) -> Routing:
        raw = self.client.get(keys.ROUTING)
        return Routing() if raw is None else Routing.model_validate_json(raw)

    def parent_for_training(self) -> str:
        """What the next round continues: the canary while one is being tried, else the active version (the base
        model until one is promoted).

        A round that started from the active version while the last round's version was the canary would miss
        that version's learning: each round would build on the version before last, and a lineage would advance
        every other round (closed-loop run 15, ``docs/benchmarks.md``). A candidate built on a canary that is then
        rolled back is not rolled out by the autopilot (``server/versions/autopilot.py``).
        """
        routing = self.routing()
        return routing.canary or routing.active

    def states(self) -> dict[str, str]:
        return {version.id: version.state for version in self.all()}

    def change(self, plan: Callable[[Routing, dict[str, str]], Transition], who: str, why: str) -> Routing:
        """Compute a transition from the current routing and states and apply it atomically; when another
        operator or server changed either meanwhile, compute it again on what they left."""
        with self.client.pipeline(transaction=True) as pipe:
            for _ in attempts("The routing"):
                try:
                    pipe.watch(keys.ROUTING, keys.VERSIONS)
                    transition = plan(self.routing(), self.states())
                    changed = [self.get(version_id) for version_id in transition.states]
                    pipe.multi()
                    pipe.set(keys.ROUTING, transition.routing.model_dump_json())
                    for version in changed:
                        version.state = transition.states[version.id]
                        self.register(version, who=who, why=why, pipe=pipe)
                    pipe.publish(keys.REGISTRY_CHANNEL, json.dumps({"routing": transition.routing.revision}))
                    pipe.execute()
                    return transition.routing
                except redis.WatchError:
                    continue

    def amend(self, version_id: str, update: Callable[[Version], dict[str, object]], who: str, why: str) -> Version:
        """Change fields of one version (not its state: ``change`` does that), as ``update`` computes them from the
        stored version, with an audit entry, atomically with any other writer of the registry."""
        with self.client.pipeline(transaction=True) as pipe:
            for _ in attempts(f"Version '{version_id}'"):
                try:
                    pipe.watch(keys.VERSIONS)
                    version = self.get(version_id)
                    if version is None:
                        raise NotFound(f"No policy version '{version_id}'.", param="version", code="version_not_found")
                    pipe.multi()
                    stored = self.register(version.model_copy(update=update(version)), who=who, why=why, pipe=pipe)
                    pipe.execute()
                    return stored
                except redis.WatchError:
                    continue

    def register(self, version: Version, who: str, why: str, pipe: redis.client.Pipeline | None = None) -> Version:
        """Store the version with an audit entry and announce it; inside ``pipe`` when given, so that the caller
        can make it atomic with its own writes. The stored version, a copy, is returned and ``version`` is left as
        it was: a transaction that is retried registers the same version again and must not record it twice."""
        entry = AuditEntry(at=time.time(), who=who, state=version.state, why=why)
        stored = version.model_copy(update={"audit": [*version.audit, entry]})
        target = pipe if pipe is not None else self.client.pipeline(transaction=True)
        target.hset(keys.VERSIONS, stored.id, stored.model_dump_json())
        target.publish(keys.REGISTRY_CHANNEL, json.dumps({"version": stored.id, "state": stored.state}))
        if pipe is None:
            target.execute()
        return stored
