"""What a person reads when a chatloop client command fails for a reason outside the program: the server or Redis
is not there, a key is wrong, the server refused the request, a setting is malformed.

Each is one line that says what to check. ``chatloop`` prints it and exits non-zero (``client/cli.py``: ``main``);
the terminal client prints it and goes on. Anything else is a bug, and keeps its traceback.
"""

from __future__ import annotations

from http import HTTPStatus

import httpx
import httpx2
import openai
import pydantic
import redis

from core.errors import SetupError

REQUEST_ERRORS = (openai.APIError, httpx.HTTPError, httpx2.HTTPError)
"""What a request to the server may raise: the SDK's errors, and the transports' (the SDK does not wrap a
connection lost mid-stream, and the other calls go through plain httpx)."""


class ClientError(Exception):
    """A failure already phrased as the one line the user should read."""


COMMAND_ERRORS = (*REQUEST_ERRORS, ClientError, SetupError, redis.RedisError, OSError)
"""Failures of a command's surroundings rather than of its code: reported in one line, never as a traceback."""


def describe(exc: Exception) -> str:
    """One line for a failure in ``COMMAND_ERRORS``: the server's own message when it sent one."""
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException | httpx2.TimeoutException):
        return f"the server at {_origin(exc)} did not answer in time"
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError | httpx2.TransportError):
        return f"cannot reach the server at {_origin(exc)} ({_cause(exc)}): is it running, and is --url right?"
    if isinstance(exc, openai.APIStatusError):
        message = exc.body.get("message") if isinstance(exc.body, dict) else None
        return _refusal(message or exc.message, exc.status_code)
    if isinstance(exc, httpx.HTTPStatusError | httpx2.HTTPStatusError):
        return _refusal(error_message(exc.response), exc.response.status_code)
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return f"cannot reach Redis ({exc}): check REDIS_URL, or leave it empty for the local one"
    return str(exc)


def describe_settings(exc: pydantic.ValidationError) -> str:
    """One line for settings that do not validate, naming each variable at fault."""
    return "invalid setting: " + "; ".join(f"{_setting(e['loc'])}: {e['msg']}" for e in exc.errors())


def error_message(response: httpx.Response | httpx2.Response) -> str:
    """The ``error.message`` of an OpenAI-shaped error body, or what the response has instead (a proxy's page)."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text.strip() or response.reason_phrase


def _refusal(message: str, status: int) -> str:
    hint = ": check the key (--key)" if status == HTTPStatus.UNAUTHORIZED else ""
    return f"{message} (HTTP {status}){hint}"


def _origin(exc: Exception) -> str:
    """Where the failed request went, without its path or any credentials in the URL."""
    try:
        url = exc.request.url  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError for an error raised outside a request
        return "the configured URL"
    return f"{url.scheme}://{url.netloc.decode()}"


def _cause(exc: BaseException) -> str:
    """The innermost reason: the SDK's "Connection error." wraps the socket's "Connection refused"."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)


def _setting(location: tuple[int | str, ...]) -> str:
    """The environment variable of a settings field (``('ppo', 'epochs')`` is CHATLOOP_PPO__EPOCHS)."""
    return "CHATLOOP_" + "__".join(str(part) for part in location).upper()
