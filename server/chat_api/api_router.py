"""HTTP route of ``/v1/chat/completions``: authentication, body parsing, and the choice of stream or JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from sse_starlette import EventSourceResponse

from server.chat_api.protocol import ChatCompletion, ChatCompletionRequest
from server.dependencies import CallerDep, ChatServiceDep
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


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, caller: CallerDep, service: ChatServiceDep
) -> ChatCompletion | EventSourceResponse | Response:
    chat = service.prepare(body, caller)
    if body.stream:
        return EventSourceResponse(await service.stream(chat), sep="\n", ping=15)
    try:
        return await until_disconnected(request, service.complete(chat))
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
