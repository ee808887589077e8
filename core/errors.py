"""What can go wrong in the domain, said in its own terms: an answer or version that is not there, a change the
current state forbids, a caller going too fast, a value that makes no sense.

Pure logic (``core``, ``feedback``) raises these and knows nothing of HTTP; the server maps each kind to its
status in one table (``server/errors.py``). ``param`` names the request field at fault and ``code`` is the
machine-readable reason, both passed on to the client as they are.
"""

from __future__ import annotations


class ChatloopError(Exception):
    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class NotFound(ChatloopError):
    """No such thing, or one that belongs to someone else: the two are told apart to no one."""


class Conflict(ChatloopError):
    """The thing exists, but its state forbids the change (a transition the routing rules refuse)."""


class InProgress(ChatloopError):
    """The answer is still being generated; the same request will succeed once it has finished."""


class Retryable(ChatloopError):
    """Refused for now; the same request may succeed after ``retry_after_s`` seconds."""

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class RateLimited(Retryable):
    """The caller went past one of its limits."""


class Contended(Retryable):
    """Others changed what this change was decided from on every try (``core/contention.py``); nothing was
    written."""


class InvalidInput(ChatloopError):
    """A value the caller sent cannot be used; ``param`` says which."""


class SetupError(Exception):
    """The machine lacks something chatloop needs to start (redis-server, the model's files); the message says
    what to install or set. Not a domain error: no request causes it, so the server never maps it to a status."""
