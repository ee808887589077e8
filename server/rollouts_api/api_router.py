"""``POST /v1/admin/rollouts`` (admin key only): answers sampled with a trainer's adapter in the making."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from server.dependencies import RolloutServiceDep, get_admin
from server.rollouts_api.protocol import RolloutRequest, RolloutResponse
from server.unicode_body import UnicodeBodyRoute

router = APIRouter(prefix="/v1/admin", dependencies=[Depends(get_admin)], route_class=UnicodeBodyRoute)


@router.post("/rollouts")
async def rollouts(request: RolloutRequest, service: RolloutServiceDep) -> RolloutResponse:
    return await service.rollout(request)
