"""What every route that generates an answer shares (chat, responses, completions): the caller's place taken
before the work (``server/limits.py``), the work cancelled when the client hangs up, and a stream that holds the
place until its last byte."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request, Response
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from core.config import Settings
from server.auth import Caller
from server.limits import Admission, ChatLimiter

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

    def __init__(self, events: AsyncIterator[Any], admission: Admission, ping_s: float):
        super().__init__(events, sep="\n", ping=ping_s, headers=admission.headers)
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.admission.release()


async def answer(
    *,
    stream: bool,
    request: Request,
    response: Response,
    caller: Caller,
    limiter: ChatLimiter,
    settings: Settings,
    open_stream: Callable[[], Awaitable[AsyncIterator[Any]]],
    whole: Callable[[], Awaitable[T]],
) -> T | Response:
    """The answer as a stream (``open_stream``, whose events an ``AdmittedStream`` sends) or as one body
    (``whole``), within the caller's limits. A stream that cannot start (a 400 before its first byte) frees the
    place at once."""
    if stream:
        admission = await limiter.admit(caller)
        try:
            events = await open_stream()
        except BaseException:
            admission.release()
            raise
        return AdmittedStream(events, admission, settings.stream_ping_s)
    async with limiter.admitted(caller, response):
        try:
            return await until_disconnected(request, whole())
        except ClientDisconnected:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
