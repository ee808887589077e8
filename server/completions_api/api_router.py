"""HTTP route of ``/v1/completions``: as chat's (``server/answer_routes.py``), for a raw prompt."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sse_starlette import EventSourceResponse

from server.answer_routes import answer
from server.completions_api.protocol import Completion, CompletionRequest
from server.dependencies import CallerDep, ChatLimiterDep, CompletionServiceDep, SettingsDep
from server.unicode_body import UnicodeBodyRoute

router = APIRouter(route_class=UnicodeBodyRoute)


@router.post("/v1/completions", response_model=None)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    response: Response,
    caller: CallerDep,
    limiter: ChatLimiterDep,
    settings: SettingsDep,
    service: CompletionServiceDep,
) -> Completion | EventSourceResponse | Response:
    return await answer(
        stream=body.stream,
        request=request,
        response=response,
        caller=caller,
        limiter=limiter,
        settings=settings,
        open_stream=lambda: service.stream(service.prepare(body, caller)),
        whole=lambda: service.complete(service.prepare(body, caller)),
    )
