"""Request bodies must be Unicode text, checked once for every route that takes a body (``UnicodeBodyRoute``).

Python's ``json.loads``, which FastAPI parses bodies with, keeps an escaped lone surrogate (``"\\ud800"``) as a
``str`` that no UTF-8 encoder accepts, and passes the encoded ones on too (it decodes with ``surrogatepass``): such
text would validate, then fail in Redis, the tokenizer or the JSON of the response, a 500 far from its cause.
Bytes that are not UTF-8 are no better: FastAPI answers them with a 400 that names nothing. Here both are refused
as FastAPI parses the body, naming the parameter that holds them. A body of plain UTF-8 without surrogate
escapes, almost every body, costs one decode and two scans.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from server.errors import ApiError

SURROGATE = re.compile("[\ud800-\udfff]")
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""The JSON escape of a surrogate; one half of an escaped pair (an emoji, say) matches too, and is then parsed."""


def _first_not_text(value: object) -> list[str] | None:
    """The path of a string in a parsed body that is not Unicode text (the path of the object, for a key); None
    when every string is text. Walked with a stack rather than recursion: a deeply nested body must not exhaust
    Python's."""
    pending: list[tuple[list[str], object]] = [([], value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str) and SURROGATE.search(item):
            return path
        if isinstance(item, dict):
            for key, child in item.items():
                if SURROGATE.search(key):
                    return path
                pending.append(([*path, key], child))
        elif isinstance(item, list):
            pending.extend(([*path, str(index)], child) for index, child in enumerate(item))
    return None


def not_text_at(body: bytes) -> list[str] | None:
    """Where ``body`` holds something that is not Unicode text: the path of the parameter, ``[]`` for the body as
    a whole (bytes that are not UTF-8 outside any JSON string); None when it is all text."""
    text = body.decode("utf-8", "surrogateescape")  # each byte that is not UTF-8 becomes a lone surrogate
    if SURROGATE.search(text) is None and SURROGATE_ESCAPE.search(body) is None:
        return None
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return [] if SURROGATE.search(text) else None  # text that is not JSON is FastAPI's to refuse
    return _first_not_text(parsed)


def not_text_error(path: list[str]) -> ApiError:
    param = ".".join(path) or None
    where = f"'{param}'" if param else "the request body"
    return ApiError(
        400, f"Invalid text in {where}: a lone surrogate or bytes that are not UTF-8. Send UTF-8 text.", param=param
    )


class UnicodeJsonRequest(Request):
    async def json(self) -> Any:
        """The body parsed as FastAPI parses it, once it is known to be text. ``ApiError`` is an HTTPException,
        which FastAPI lets through from here (it turns any other error into a 400 of its own)."""
        path = not_text_at(await self.body())
        if path is not None:
            raise not_text_error(path)
        return await super().json()


class UnicodeBodyRoute(APIRoute):
    """A route whose JSON body is refused when it is not Unicode text. Routers whose routes take a body are made
    with ``APIRouter(route_class=UnicodeBodyRoute)``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            return await handler(UnicodeJsonRequest(request.scope, request.receive))

        return checked
