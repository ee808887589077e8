"""``GET /v1/models``: the routed alias and every version this caller may pin."""

from __future__ import annotations

from fastapi import APIRouter

from core.policy import BASE_VERSION, pinned_name, version_order
from server.dependencies import CallerDep, SettingsDep, StartedAtDep, VersionsDep

router = APIRouter()


@router.get("/v1/models")
async def list_models(
    caller: CallerDep, settings: SettingsDep, created: StartedAtDep, versions: VersionsDep
) -> dict[str, object]:
    if versions is None:
        pinnable = {BASE_VERSION}
    else:
        pinnable = (versions.known if caller.is_admin else versions.pinnable_by_users()) - set(versions.errors)
    names = [settings.model_alias, *(pinned_name(settings.model_alias, v) for v in sorted(pinnable, key=version_order))]
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": created, "owned_by": "chatloop"} for name in names],
    }
