"""HTTP routes of the admin API (admin key only): policy versions, the traffic split, training rounds, and the
feedback history behind the ops page at ``/admin``."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import FileResponse

from feedback.erasure import ErasureReport
from feedback.stats import read_history
from server.admin_api.protocol import (
    ChangeRequest,
    ErasureRequest,
    PinnableRequest,
    PromoteRequest,
    RoutingView,
    VersionList,
    VersionView,
)
from server.dependencies import AdminDep, AdminServiceDep, ErasuresDep, RedisDep, WebRootDep, get_admin
from server.unicode_body import UnicodeBodyRoute

router = APIRouter(prefix="/v1/admin", dependencies=[Depends(get_admin)], route_class=UnicodeBodyRoute)
page = APIRouter()

NO_PROMOTE_OPTIONS = PromoteRequest()
NO_REASON = ChangeRequest()
"""The bodies of a POST sent without one."""


@page.get("/admin", include_in_schema=False)
async def ops_page(web_root: WebRootDep) -> FileResponse:
    """The page itself is public, like the chat UI; every figure on it comes from the API below, with the key."""
    return FileResponse(web_root / "admin.html")


@router.get("/routing")
async def get_routing(admin: AdminServiceDep) -> RoutingView:
    return await admin.routing()


@router.get("/versions")
async def list_versions(admin: AdminServiceDep) -> VersionList:
    return await admin.list()


@router.get("/versions/{version}")
async def show_version(version: str, admin: AdminServiceDep) -> VersionView:
    return await admin.show(version)


@router.post("/versions/{version}/promote")
async def promote_version(
    version: str,
    admin: AdminServiceDep,
    caller: AdminDep,
    body: Annotated[PromoteRequest, Body()] = NO_PROMOTE_OPTIONS,
) -> RoutingView:
    return await admin.promote(version, body.canary_percent, caller, body.reason)


@router.post("/versions/{version}/retire")
async def retire_version(
    version: str, admin: AdminServiceDep, caller: AdminDep, body: Annotated[ChangeRequest, Body()] = NO_REASON
) -> RoutingView:
    return await admin.retire(version, caller, body.reason)


@router.post("/versions/{version}/pinnable")
async def set_pinnable(version: str, body: PinnableRequest, admin: AdminServiceDep, caller: AdminDep) -> VersionView:
    """Let every caller pin the version (or only admins again): users may otherwise pin only the active version and
    the canary."""
    return await admin.set_pinnable(version, body.pinnable, caller, body.reason)


@router.post("/erasures")
async def erase(body: ErasureRequest, erasures: ErasuresDep, caller: AdminDep) -> ErasureReport:
    """Remove a person's records, conversations' state, events and pairs; the versions trained on their pairs are
    counted in the registry (``erased_pairs``)."""
    if body.account is not None:
        return await erasures.of_account(body.account, caller)
    return await erasures.of_user(body.user or "", body.api_key, caller)


@router.post("/rollback")
async def roll_back(
    admin: AdminServiceDep, caller: AdminDep, body: Annotated[ChangeRequest, Body()] = NO_REASON
) -> RoutingView:
    return await admin.rollback(caller, body.reason)


@router.get("/rounds")
async def training_rounds(
    admin: AdminServiceDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> dict[str, object]:
    return {"object": "list", "data": await admin.rounds(limit)}


@router.get("/stats/history")
async def stats_history(client: RedisDep, hours: Annotated[float, Query(gt=0, le=24 * 7)] = 24.0) -> dict[str, object]:
    snapshots = await read_history(client, since=time.time() - hours * 3600)
    return {"object": "list", "data": snapshots}
