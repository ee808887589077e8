"""The one exception type for errors meant for a client, raised anywhere below a route (server or feedback).

The server renders it in OpenAI's error shape (``server/errors.py``); it lives here so that ``feedback`` can raise
it without importing FastAPI.
"""

from __future__ import annotations


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}
