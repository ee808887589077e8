"""HTTP routes of ``/v1/responses``: create (streamed or not, within the caller's limits, as chat), and the stored
responses of the caller's principal: retrieve, delete, cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Path, Request, Response
from sse_starlette import EventSourceResponse

from server.answer_routes import answer
from server.dependencies import CallerDep, ChatLimiterDep, ResponseServiceDep, SettingsDep
from server.responses_api.protocol import MAX_ID_CHARS, ResponseRequest
from server.unicode_body import UnicodeBodyRoute

router = APIRouter(prefix="/v1/responses", route_class=UnicodeBodyRoute)
ResponseId = Path(max_length=MAX_ID_CHARS)


@router.post("", response_model=None)
async def create_response(
    body: ResponseRequest,
    request: Request,
    response: Response,
    caller: CallerDep,
    limiter: ChatLimiterDep,
    settings: SettingsDep,
    service: ResponseServiceDep,
) -> dict[str, Any] | EventSourceResponse | Response:
    async def open_stream() -> AsyncIterator[dict[str, str]]:
        return await service.stream(await service.prepare(body, caller))

    async def whole() -> dict[str, Any]:
        return await service.create(await service.prepare(body, caller))

    return await answer(
        stream=body.stream,
        request=request,
        response=response,
        caller=caller,
        limiter=limiter,
        settings=settings,
        open_stream=open_stream,
        whole=whole,
    )


@router.get("/{response_id}")
async def retrieve_response(caller: CallerDep, service: ResponseServiceDep, response_id: str = ResponseId) -> dict:
    return await service.retrieve(response_id, caller)


@router.delete("/{response_id}")
async def delete_response(caller: CallerDep, service: ResponseServiceDep, response_id: str = ResponseId) -> dict:
    return await service.delete(response_id, caller)


@router.post("/{response_id}/cancel")
async def cancel_response(caller: CallerDep, service: ResponseServiceDep, response_id: str = ResponseId) -> None:
    await service.cancel(response_id, caller)
