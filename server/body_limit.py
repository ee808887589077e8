"""The request body's size limit (``CHATLOOP_MAX_BODY_MB``), enforced while the body arrives.

FastAPI reads and parses the whole body before any dependency runs, the key check included, so without a limit a
client with no key could make the server hold as much as it cares to send. This ASGI middleware answers a declared
``Content-Length`` over the limit before the app sees the request, and otherwise counts the bytes as ``receive``
hands them on and raises a 413 ``ApiError`` from ``receive`` once the count passes the limit: FastAPI's body
reading lets it through (it is an HTTPException) and the app's error handlers answer it. Starlette's own
``RequestBodyLimitMiddleware`` works alike but answers in plain text, where clients expect OpenAI's error shape.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ApiError, error_response

MB = 2**20


def _declared_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_mb: float) -> None:
        self.app = app
        self.max_body_mb = max_body_mb
        self.limit_bytes = int(max_body_mb * MB)

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            f"The request body is larger than this server accepts ({self.max_body_mb:g} MB).",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.limit_bytes:
            refusal = self._too_large()
            await error_response(refusal.status, refusal.message, code=refusal.code)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, counting_receive, send)
