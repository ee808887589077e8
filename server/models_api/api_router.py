"""``GET /v1/models``: the routed alias and every version a client may pin."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from core.policy import BASE_VERSION, pinned_name, version_order
from server.auth import Caller, require_user

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request, _: Caller = Depends(require_user)) -> dict[str, object]:
    settings = request.app.state.settings
    created = request.app.state.started_at
    versions = request.app.state.versions
    known = sorted(versions.known - set(versions.errors), key=version_order) if versions else [BASE_VERSION]
    names = [settings.model_alias, *(pinned_name(settings.model_alias, version) for version in known)]
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": created, "owned_by": "chatloop"} for name in names],
    }
