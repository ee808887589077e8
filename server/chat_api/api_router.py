"""HTTP route of ``/v1/chat/completions``: authentication, the caller's limits (``server/limits.py``), body parsing,
and the choice of stream or JSON (``server/answer_routes.py``)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sse_starlette import EventSourceResponse

from server.answer_routes import answer
from server.chat_api.protocol import ChatCompletion, ChatCompletionRequest
from server.dependencies import CallerDep, ChatLimiterDep, ChatServiceDep, SettingsDep
from server.unicode_body import UnicodeBodyRoute

router = APIRouter(route_class=UnicodeBodyRoute)


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    response: Response,
    caller: CallerDep,
    limiter: ChatLimiterDep,
    settings: SettingsDep,
    service: ChatServiceDep,
) -> ChatCompletion | EventSourceResponse | Response:
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
