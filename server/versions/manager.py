"""This server's view of the routing: it follows the registry and serves only what it has loaded.

The registry announces each change on a pub/sub channel, and the server also re-reads the routing every
``rollout.reconcile_seconds``, so that a message lost while Redis or the network was away cannot leave a replica
stale. Every replica applies the same stored routing, so all of them converge to it. A version that fails to load
is reported under ``chatloop:version-errors`` and not routed to: this server keeps serving what it had. While
Redis is down the server keeps serving its loaded versions and keeps trying.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from vllm.lora.request import LoRARequest

from core import keys
from core.config import Settings
from core.keyed_ids import KeyedIds
from core.policy import BASE_VERSION, version_order
from core.registry import Version
from core.routing import Routing, routed_version
from server.errors import ApiError
from server.versions.loaded import LoadedVersions
from server.versions.weights import BrokenVersion

log = logging.getLogger(__name__)

SERVER_NAME = f"{socket.gethostname()}:{os.getpid()}"
UNPINNABLE = {"rejected", "retired"}


@dataclass(frozen=True)
class Route:
    """Which version answers a request, and the canary period its answer counts in (None when pinned, or when no
    canary runs)."""

    version: str
    pinned: bool
    canary_period: str | None


class VersionManager:
    def __init__(self, loaded: LoadedVersions, client: aioredis.Redis, settings: Settings, ids: KeyedIds):
        self.loaded = loaded
        self.client = client
        self.settings = settings
        self.ids = ids
        self.routing = Routing(revision=-1)
        """What this server applies: the stored routing, less what failed to load here."""
        self.desired: Routing | None = None
        """The stored routing as last read; None until Redis has answered once."""
        self.known: set[str] = {BASE_VERSION}
        self.pinnable: set[str] = set()
        """Versions an admin let everyone pin, unless rejected or retired since."""
        self.errors: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    # ---- following the registry --------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile on every registry message and at least every ``reconcile_seconds``, until cancelled."""
        period = self.settings.rollout.reconcile_seconds
        while True:
            try:
                async with self.client.pubsub() as pubsub:
                    await pubsub.subscribe(keys.REGISTRY_CHANNEL)
                    while True:
                        await self.reconcile()
                        await pubsub.get_message(ignore_subscribe_messages=True, timeout=period)
            except (RedisError, OSError):
                log.warning("registry unreachable; serving the loaded versions", exc_info=True)
                await asyncio.sleep(period)

    async def reconcile(self) -> Routing:
        """Apply the stored routing if it is newer than what this server applied. Reads race (the reconcile loop and
        an admin's change both call this): a read overtaken by a newer one must not undo it."""
        raw, versions = await self._read_registry()
        desired = Routing() if raw is None else Routing.model_validate_json(raw)
        self.desired = desired
        new_versions = {v.id for v in versions} - self.known
        self.known = {BASE_VERSION, *(v.id for v in versions)}
        self.pinnable = {v.id for v in versions if v.pinnable and v.state not in UNPINNABLE}
        async with self._lock:
            if desired.supersedes(self.routing):
                await self._apply(desired)
            elif new_versions:
                self._in_background(self._prepare_next(self.routing))
        return self.routing

    def unready_reason(self) -> tuple[str, str] | None:
        """Why this server must not be sent users now (a code and a sentence), or None. Until it has applied the
        routing once it serves the base model whatever the routing says; when the active version failed to load here
        it serves another one than the other replicas do. A load still in progress (every promotion) is no reason:
        all replicas would leave their load balancer at once."""
        if self.desired is None or self.routing.revision < 0:
            return "routing_unknown", (
                "The routing is not applied yet: until this server has read it from Redis and loaded what it names, "
                "it serves the base model."
            )
        wanted = self.desired.active
        if wanted != self.loaded.active and wanted in self.errors:
            return "active_version_unavailable", (
                f"The active version {wanted} failed to load on this server (an admin sees why in "
                f"/v1/admin/versions); it serves {self.loaded.active}."
            )
        return None

    def _in_background(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _read_registry(self) -> tuple[bytes | None, list[Version]]:
        pipe = self.client.pipeline(transaction=False)
        pipe.get(keys.ROUTING)
        pipe.hvals(keys.VERSIONS)
        raw, versions = await pipe.execute()
        return raw, [Version.model_validate_json(version) for version in versions]

    async def _apply(self, desired: Routing) -> None:
        started = time.perf_counter()
        await self._load(desired.active, self.loaded.make_active)
        canary = desired.canary
        if canary is not None and not await self._load(canary, self.loaded.lora_for):
            canary = None
        self.routing = desired.model_copy(
            update={
                "active": self.loaded.active,
                "canary": canary,
                "canary_percent": desired.canary_percent * bool(canary),
            }
        )
        log.info(
            "routing applied",
            extra={
                "revision": desired.revision,
                "active": self.routing.active,
                "canary": canary,
                "canary_percent": self.routing.canary_percent,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        self._in_background(self._prepare_next(desired))

    async def _prepare_next(self, routing: Routing) -> None:
        """Merge the weights a promotion or a rollback would likely swap in (the canary, the rollback target, the
        newest version), so that the swap itself is quick."""
        newest = max(self.known, key=version_order)
        for version in dict.fromkeys(filter(None, [routing.canary, *routing.history[-1:], newest])):
            await self._load(version, self.loaded.prepare)

    async def _load(self, version: str, load: Callable[[str], Awaitable[object]]) -> bool:
        """Load a version one way or the other; a failure of any kind leaves the engine serving what it had."""
        try:
            await load(version)
        except Exception as exc:  # a broken artifact must not take the server down, whatever the error
            await self._failed(version, exc)
            return False
        self.errors.pop(version, None)
        return True

    async def _failed(self, version: str, exc: Exception) -> None:
        self.errors[version] = str(exc)
        log.error("policy version failed to load", extra={"version": version, "error": str(exc)})
        report = {"server": SERVER_NAME, "error": str(exc), "at": time.time()}
        try:
            await self.client.hset(keys.VERSION_ERRORS, version, json.dumps(report))
        except RedisError:
            log.warning("could not report the load failure", extra={"version": version})

    # ---- routing requests -----------------------------------------------------------------------------------

    def route(self, pinned: str | None, user_id: str, *, admin: bool) -> Route:
        """The version that answers: the pinned one, else the user's side of the current canary's split. Anyone may
        pin the active version, the canary and the versions an admin made pinnable; an admin any version. To anyone
        else, the others do not exist."""
        if pinned is None:
            routing = self.routing
            point = 100.0 if routing.canary is None else self.ids.split_point(routing.canary, user_id)
            return Route(routed_version(routing, point), pinned=False, canary_period=routing.canary_period)
        if pinned not in (self.known if admin else self.pinnable_by_users()):
            raise ApiError(
                404,
                f"The model '{self.settings.model_alias}@{pinned}' does not exist or cannot be served.",
                param="model",
                code="model_not_found",
            )
        return Route(pinned, pinned=True, canary_period=None)

    def pinnable_by_users(self) -> set[str]:
        routing = self.routing
        return {routing.active, *filter(None, [routing.canary]), *(self.pinnable & self.known)}

    async def adapter(self, version: str, pinned: bool) -> tuple[str, LoRARequest | None]:
        """The version that will really answer and the adapter its request carries. A routed canary whose adapter
        cannot be rebuilt (after a swap) falls back to the active version rather than fail the request."""
        try:
            return version, await self.loaded.lora_for(version)
        except BrokenVersion as exc:
            await self._failed(version, exc)
            if pinned:
                raise ApiError(503, f"Version '{version}' cannot be served: its files failed to load.") from exc
            return self.loaded.active, None
