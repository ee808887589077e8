"""HTTP route of ``/v1/chat/completions``: authentication, the caller's limits (``server/limits.py``), body parsing,
and the choice of stream or JSON."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from server.auth import Caller
from server.chat_api.protocol import ChatCompletion, ChatCompletionRequest
from server.chat_api.serving import ChatService
from server.dependencies import CallerDep, ChatLimiterDep, ChatServiceDep
from server.limits import Admission
from server.unicode_body import UnicodeBodyRoute

router = APIRouter(route_class=UnicodeBodyRoute)

T = TypeVar("T")
CLIENT_CLOSED_REQUEST = 499


class ClientDisconnected(Exception):
    pass


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run ``work`` but cancel it (and so abort its engine request) if the client hangs up first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        watcher.cancel()
        return task.result()
    task.cancel()
    raise ClientDisconnected


class AdmittedStream(EventSourceResponse):
    """An SSE answer that holds its request's place until the last byte is sent or the stream is cut short: the
    response is what runs last, whether the answer ends, fails, or its client goes away."""

    def __init__(self, chunks: AsyncIterator[str], admission: Admission):
        super().__init__(chunks, sep="\n", ping=15, headers=admission.headers)
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.admission.release()


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    response: Response,
    caller: CallerDep,
    limiter: ChatLimiterDep,
    service: ChatServiceDep,
) -> ChatCompletion | EventSourceResponse | Response:
    if body.stream:
        return await _stream(body, caller, service, await limiter.admit(caller))
    async with limiter.admitted(caller, response):
        try:
            return await until_disconnected(request, service.complete(service.prepare(body, caller)))
        except ClientDisconnected:
            return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _stream(
    body: ChatCompletionRequest, caller: Caller, service: ChatService, admission: Admission
) -> AdmittedStream:
    """The streamed answer, which takes the request's place over; until it exists, the place is ours to free."""
    try:
        chunks = await service.stream(service.prepare(body, caller))
    except BaseException:
        admission.release()
        raise
    return AdmittedStream(chunks, admission)
