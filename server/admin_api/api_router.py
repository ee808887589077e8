"""HTTP routes of the admin API (admin key only): policy versions, the traffic split, training rounds, and the
feedback history behind the ops page at ``/admin``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import FileResponse

from feedback.stats import read_history
from server.admin_api.protocol import ChangeRequest, PromoteRequest, RoutingView, VersionList, VersionView
from server.admin_api.serving import AdminService
from server.auth import Caller, require_admin

router = APIRouter(prefix="/v1/admin")
page = APIRouter()


def admin_service(request: Request) -> AdminService:
    return request.app.state.admin


@page.get("/admin", include_in_schema=False)
async def ops_page(request: Request) -> FileResponse:
    """The page itself is public, like the chat UI; every figure on it comes from the API below, with the key."""
    return FileResponse(request.app.state.web_root / "admin.html")


@router.get("/routing")
async def get_routing(request: Request, _: Caller = Depends(require_admin)) -> RoutingView:
    return await admin_service(request).routing()


@router.get("/versions")
async def list_versions(request: Request, _: Caller = Depends(require_admin)) -> VersionList:
    return await admin_service(request).list()


@router.get("/versions/{version}")
async def show_version(version: str, request: Request, _: Caller = Depends(require_admin)) -> VersionView:
    return await admin_service(request).show(version)


@router.post("/versions/{version}/promote")
async def promote_version(
    version: str,
    request: Request,
    body: PromoteRequest = Body(PromoteRequest()),
    caller: Caller = Depends(require_admin),
) -> RoutingView:
    return await admin_service(request).promote(version, body.canary_percent, caller, body.reason)


@router.post("/versions/{version}/retire")
async def retire_version(
    version: str, request: Request, body: ChangeRequest = Body(ChangeRequest()), caller: Caller = Depends(require_admin)
) -> RoutingView:
    return await admin_service(request).retire(version, caller, body.reason)


@router.post("/rollback")
async def roll_back(
    request: Request, body: ChangeRequest = Body(ChangeRequest()), caller: Caller = Depends(require_admin)
) -> RoutingView:
    return await admin_service(request).rollback(caller, body.reason)


@router.get("/rounds")
async def training_rounds(
    request: Request, limit: int = Query(50, ge=1, le=1000), _: Caller = Depends(require_admin)
) -> dict[str, object]:
    return {"object": "list", "data": await admin_service(request).rounds(limit)}


@router.get("/stats/history")
async def stats_history(
    request: Request, hours: float = Query(24.0, gt=0, le=24 * 7), _: Caller = Depends(require_admin)
) -> dict[str, object]:
    snapshots = await read_history(request.app.state.gestures.client, since=time.time() - hours * 3600)
    return {"object": "list", "data": snapshots}
