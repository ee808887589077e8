"""Every error leaves the server in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Clients built on the OpenAI SDK turn that shape into typed exceptions (``BadRequestError`` and friends) with a
readable message; a bare string or a FastAPI ``{"detail": ...}`` would surface as an opaque failure. The domain's
exceptions (``core/errors.py``) get their HTTP status here and nowhere else (``DOMAIN_STATUSES``), as vLLM maps its
error types; the server's own HTTP-level refusals (a wrong key, a model still loading) raise ``ApiError`` with
their status. Unexpected exceptions are logged with their traceback here and answered with a generic 500 that
reveals nothing inside.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import OutOfMemoryError, RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import ChatloopError, Conflict, Contended, InProgress, InvalidInput, NotFound, RateLimited, Retryable

log = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}

UNSUPPORTED_PARAMETER = "unsupported_parameter"
"""The error type, and code, of a request parameter the server knows of but does not honour."""

DOMAIN_STATUSES: dict[type[ChatloopError], int] = {
    InvalidInput: 400,
    NotFound: 404,
    Conflict: 409,
    InProgress: 409,
    RateLimited: 429,
    Contended: 503,
}


class ApiError(StarletteHTTPException):
    """A refusal that is HTTP's own business, raised by the server's routes and their dependencies, and while a
    body is read (``server/body_limit.py``, ``server/unicode_body.py``): there it must be an HTTPException, the
    one kind of error that FastAPI's body reading lets through rather than turning it into a 400 of its own.
    ``headers`` go out with the error (a 429's ``Retry-After`` and rate-limit state)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(status, message, headers=headers)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(body, status_code=status, headers=headers)


def domain_error_response(exc: ChatloopError) -> JSONResponse:
    status = next(status for kind, status in DOMAIN_STATUSES.items() if isinstance(exc, kind))
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Retryable) else None
    return error_response(status, exc.message, param=exc.param, code=exc.code, headers=headers)


def _field_path(loc: Sequence[int | str]) -> list[str]:
    """The request field a validation error's location names. Where the body is a tagged union (the feedback
    gestures), pydantic puts the tag of the shape that was meant right after ``body``; those tags are the shapes'
    class names, which no request field is, so a capitalized name there is left out."""
    parts = [str(part) for part in loc]
    if len(parts) > 1 and parts[0] == "body" and parts[1][:1].isupper():
        del parts[1]
    return [part for part in parts if part != "body"]


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    """The first problem, phrased for a person, naming the request field it concerns. A parameter the server
    does not honour (``unsupported_parameter``, raised for the whole body) names itself."""
    first = exc.errors()[0]
    kind = first.get("type")
    if kind == "json_invalid":
        return error_response(400, "We could not parse the JSON body of your request.")
    if kind == UNSUPPORTED_PARAMETER:
        return error_response(400, first["msg"], param=first["ctx"]["param"], code=UNSUPPORTED_PARAMETER)
    location = _field_path(first.get("loc", ()))
    param = ".".join(location) or None
    detail = first.get("msg", "invalid value")
    if kind == "missing":
        return error_response(400, f"Missing required parameter: '{param}'.", param=param)
    if kind == "literal_error" and location and location[-1] == "role":
        detail = f"unknown role {first.get('input')!r}; expected one of system, developer, user, assistant"
    return error_response(400, f"Invalid value for '{param}': {detail}.", param=param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, param=exc.param, code=exc.code, headers=exc.headers)

    @app.exception_handler(ChatloopError)
    async def _domain_error(_: Request, exc: ChatloopError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return error_response(exc.status_code, message, headers=exc.headers)  # a 405's Allow, say

    @app.exception_handler(RedisError)
    async def _store_down(request: Request, exc: RedisError) -> JSONResponse:
        if isinstance(exc, OutOfMemoryError):
            log.error("redis is full: it refuses writes past its maxmemory", extra={"path": request.url.path})
            return error_response(
                503,
                "The feedback store is full; nothing was stored. Retry later.",
                code="store_full",
                headers={"Retry-After": "30"},
            )
        log.warning("redis unavailable", extra={"path": request.url.path, "error": type(exc).__name__})
        return error_response(
            503,
            "The feedback store is unavailable; retry shortly.",
            code="store_unavailable",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return error_response(500, "The server had an error while processing your request.")
