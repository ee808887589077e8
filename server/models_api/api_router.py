"""``GET /v1/models``: the routed alias and every version a client may pin."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from core.policy import BASE_VERSION, pinned_name, version_order
from server.dependencies import SettingsDep, StartedAtDep, VersionsDep, get_caller

router = APIRouter()


@router.get("/v1/models", dependencies=[Depends(get_caller)])
async def list_models(settings: SettingsDep, created: StartedAtDep, versions: VersionsDep) -> dict[str, object]:
    known = sorted(versions.known - set(versions.errors), key=version_order) if versions else [BASE_VERSION]
    names = [settings.model_alias, *(pinned_name(settings.model_alias, version) for version in known)]
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": created, "owned_by": "chatloop"} for name in names],
    }
