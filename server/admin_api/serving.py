"""Operators' actions on policy versions: read the registry, change the routing, and wait until this server
serves the change, so that the answer of a promote means the version is live here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import redis
import redis.asyncio as aioredis

from core import keys
from core.errors import NotFound
from core.policy import BASE_VERSION
from core.registry import Registry
from core.routing import Routing, Transition, promote, retire, rollback
from server.admin_api.protocol import RoutingView, VersionList, VersionView
from server.auth import Caller
from server.versions.manager import VersionManager

MAX_LINEAGE = 1000


class AdminService:
    def __init__(
        self, client: redis.Redis, async_client: aioredis.Redis, versions: Callable[[], VersionManager | None]
    ):
        self.registry = Registry(client)
        self.async_client = async_client
        self._versions = versions

    async def routing(self) -> RoutingView:
        stored = await asyncio.to_thread(self.registry.routing)
        manager = self._versions()
        return RoutingView(stored=stored, applied=manager.routing if manager else None)

    async def list(self) -> VersionList:
        versions = await asyncio.to_thread(self.registry.all)
        errors = await self._load_errors()
        parents = {version.id: version.parent for version in versions}
        data = [
            VersionView(**v.model_dump(), lineage=_lineage(v.id, parents), load_errors=errors.get(v.id))
            for v in versions
        ]
        return VersionList(routing=await self.routing(), data=data)

    async def show(self, version_id: str) -> VersionView:
        listing = await self.list()
        found = next((v for v in listing.data if v.id == version_id), None)
        if found is None:
            raise NotFound(f"No policy version '{version_id}'.", code="version_not_found")
        return found

    async def _load_errors(self) -> dict[str, dict]:
        raw = await self.async_client.hgetall(keys.VERSION_ERRORS)
        return {version.decode(): json.loads(error) for version, error in raw.items()}

    async def promote(self, version: str, percent: float | None, caller: Caller, reason: str) -> RoutingView:
        return await self._change(lambda r, s: promote(r, s, version, percent), caller, reason)

    async def rollback(self, caller: Caller, reason: str) -> RoutingView:
        return await self._change(lambda r, s: rollback(r), caller, reason)

    async def retire(self, version: str, caller: Caller, reason: str) -> RoutingView:
        return await self._change(lambda r, s: retire(r, s, version), caller, reason)

    async def set_pinnable(self, version: str, pinnable: bool, caller: Caller, reason: str) -> VersionView:
        why = reason or ("pinnable by every caller" if pinnable else "pinnable by admins only")
        who = f"admin:{caller.key_id}"
        await asyncio.to_thread(self.registry.amend, version, lambda v: {"pinnable": pinnable}, who, why)
        manager = self._versions()
        if manager is not None:
            await manager.reconcile()
        return await self.show(version)

    async def _change(
        self, plan: Callable[[Routing, dict[str, str]], Transition], caller: Caller, reason: str
    ) -> RoutingView:
        who = f"admin:{caller.key_id}"
        await asyncio.to_thread(self.registry.change, plan, who, reason or "by an operator")
        manager = self._versions()
        if manager is not None:
            await manager.reconcile()
        return await self.routing()

    async def rounds(self, count: int) -> list[dict]:
        entries = await self.async_client.xrevrange(keys.TRAINER_ROUNDS, count=count)
        return [
            {"at": int(entry.decode().split("-")[0]) / 1000, **json.loads(fields[b"round"])}
            for entry, fields in reversed(entries)
        ]


def _lineage(version: str, parents: dict[str, str]) -> list[str]:
    chain = [version]
    while chain[-1] != BASE_VERSION and len(chain) < MAX_LINEAGE:
        chain.append(parents.get(chain[-1], BASE_VERSION))
    return chain
