"""Who is calling: an API key (the configured bootstrap keys or a managed one) in ``Authorization: Bearer``, or a
chat page's session cookie; and what that principal may do.

A secret is never stored or logged. Records name the caller by ``key_id``: a short hash of a key, or
``account:NAME`` for a person (their sessions and personal keys alike), so that ownership, quotas and the canary
split follow the account, whose name is also the ``user`` of their answers whatever a request says. Managed keys,
sessions and accounts are read from Redis and cached for ``ROLLOUT__RECONCILE_SECONDS``, the time within which a
revocation reaches every replica; the replica that revokes forgets at once. A write authenticated by a cookie must
come from the page's own origin (``same_origin``): the cookie is ``SameSite=Strict`` too, and this holds where a
browser ignores that. Keys that anyone can read (the local defaults, the deploy files' placeholders) are refused
before a server that other machines can reach starts (``refuse_published_keys``).
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from cachetools import TTLCache
from fastapi import Request

from core.config import LOCAL_ADMIN_KEY, LOCAL_API_KEY, Settings
from core.errors import SetupError
from feedback.access import Giver
from server.errors import ApiError
from server.identity.accounts import Account
from server.identity.api_keys import ManagedKey
from server.identity.sessions import COOKIE
from server.identity.stores import Identity
from server.identity.tokens import token_hash

PUBLISHED_KEYS = frozenset({LOCAL_API_KEY, LOCAL_ADMIN_KEY})
PLACEHOLDER = "REPLACE-ME"
CACHE_ENTRIES = 100_000
T = TypeVar("T")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Limits:
    chat_per_minute: int
    max_concurrent: int
    pairs_per_hour: int
    """Pairs per hour across all the principal's ``user``s (each ``user`` has its own quota besides)."""


@dataclass(frozen=True)
class Caller:
    key_id: str
    is_admin: bool
    limits: Limits
    may_teach: bool
    """Whether its feedback may become training data (``feedback/eligibility.py``)."""
    account: str | None = None
    """The person this principal is: their name is the ``user`` of every request, whatever the body says."""
    by_session: bool = False

    def end_user(self, requested: str | None) -> str | None:
        return requested if self.account is None else self.account

    def giver(self, requested_user: str | None) -> Giver:
        """This principal as the sender of a feedback gesture for ``requested_user``."""
        return Giver(self.key_id, self.end_user(requested_user), self.limits.pairs_per_hour, self.may_teach)


def key_id(key: str) -> str:
    return key_id_of_hash(token_hash(key))


def key_id_of_hash(digest: str) -> str:
    """A key's id from the hash under which a managed key is stored (``server/identity/tokens.py``)."""
    return digest[:16]


def account_key_id(account: str) -> str:
    return f"account:{account}"


def _bearer_token(header: str) -> str:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
            code="missing_api_key",
        )
    return token.strip()


def _matches(token: str, secret: str) -> bool:
    return hmac.compare_digest(token.encode(), secret.encode())


def same_origin(request: Request) -> None:
    """Refuse a state-changing request that a page of another origin made the browser send."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is None:
        ok = request.headers.get("sec-fetch-site") in (None, "same-origin", "none")
    else:
        ok = urlsplit(origin).netloc == request.headers.get("host")
    if not ok:
        raise ApiError(403, "Requests signed in by cookie must come from this site's own pages.", code="cross_origin")


INVALID_KEY = ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
SIGNED_OUT = ApiError(401, "Your session has ended; sign in again.", code="session_expired")


class Authenticator:
    """Turns a request's credentials into a ``Caller``; ``server/dependencies.py`` calls it for each route."""

    def __init__(self, settings: Settings, identity: Identity):
        self.settings = settings
        self.accounts = identity.accounts
        self.sessions = identity.sessions
        self.api_keys = identity.api_keys
        self._cache: TTLCache = TTLCache(maxsize=CACHE_ENTRIES, ttl=settings.rollout.reconcile_seconds)
        limits = settings.limits
        self.key_limits = Limits(limits.key_chat_per_minute, limits.key_max_concurrent, limits.key_pairs_per_hour)
        self.account_limits = Limits(
            limits.account_chat_per_minute, limits.account_max_concurrent, limits.account_pairs_per_hour
        )

    async def caller(self, request: Request) -> Caller:
        header = request.headers.get("authorization")
        if header is not None:
            return await self.by_key(_bearer_token(header))
        token = request.cookies.get(COOKIE)
        if token:
            same_origin(request)
            return await self.by_session(token)
        raise ApiError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY', or sign in on the chat page.",
            code="missing_api_key",
        )

    async def by_key(self, token: str) -> Caller:
        if _matches(token, self.settings.admin_key.get_secret_value()):
            return Caller(key_id=key_id(token), is_admin=True, limits=self.key_limits, may_teach=True)
        if any(_matches(token, key.get_secret_value()) for key in self.settings.api_keys):
            return Caller(key_id=key_id(token), is_admin=False, limits=self.key_limits, may_teach=True)
        managed = await self._cached(("key", token_hash(token)), lambda: self.api_keys.lookup(token))
        if managed is None or managed.expired(time.time()):
            raise INVALID_KEY
        if managed.owner is not None:
            return self._account_caller(await self._account(managed.owner), by_session=False, raise_as=INVALID_KEY)
        return Caller(
            key_id=key_id(token),
            is_admin=managed.role == "admin",
            limits=self._limits_of(managed),
            may_teach=managed.train,
        )

    async def by_session(self, token: str) -> Caller:
        name = await self._cached(("session", token_hash(token)), lambda: self.sessions.account(token))
        if name is None:
            raise SIGNED_OUT
        return self._account_caller(await self._account(name), by_session=True, raise_as=SIGNED_OUT)

    def forget(self, *entries: tuple[str, str]) -> None:
        """Drop what this replica cached of a session, key or account it just changed."""
        for entry in entries:
            self._cache.pop(entry, None)

    async def _account(self, name: str) -> Account | None:
        return await self._cached(("account", name), lambda: self.accounts.get(name))

    def _account_caller(self, account: Account | None, *, by_session: bool, raise_as: ApiError) -> Caller:
        if account is None or account.status != "active":
            raise raise_as
        return Caller(
            key_id=account_key_id(account.name),
            is_admin=account.is_admin,
            limits=self.account_limits,
            may_teach=account.train,
            account=account.name,
            by_session=by_session,
        )

    def _limits_of(self, managed: ManagedKey) -> Limits:
        return Limits(
            chat_per_minute=managed.chat_per_minute or self.key_limits.chat_per_minute,
            max_concurrent=managed.max_concurrent or self.key_limits.max_concurrent,
            pairs_per_hour=self.key_limits.pairs_per_hour if managed.pairs_per_hour is None else managed.pairs_per_hour,
        )

    async def _cached(self, entry: tuple[str, str], read: Callable[[], Awaitable[T | None]]) -> T | None:
        """What ``read`` returns, cached for the reconcile period; a miss (None) is not cached, so that a key or
        session just made elsewhere works at once."""
        if entry in self._cache:
            return self._cache[entry]
        value = await read()
        if value is not None:
            self._cache[entry] = value
        return value


def require_admin(caller: Caller) -> Caller:
    """Operator endpoints take the admin key, an admin's managed key, or an admin's session."""
    if not caller.is_admin:
        raise ApiError(403, "This endpoint needs the admin key.", code="admin_key_required")
    return caller


def is_published(key: str) -> bool:
    """A key printed in the README or marked as a placeholder to replace: anyone may hold it."""
    return key in PUBLISHED_KEYS or PLACEHOLDER in key


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``: localhost, 127.0.0.0/8 or ::1. Any other name may resolve to
    an interface that other machines reach, so it counts as beyond loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_published_keys(settings: Settings) -> None:
    """On loopback the published keys are a convenience; beyond it they would let anyone in, as a user or as the
    operator. Beyond loopback the secret of the keyed ids must be set too: replicas there need the same one, and a
    data folder's own is not shared. The ``SetupError`` names the variables to set; the chatloop command asks before
    it starts anything."""
    if is_loopback(settings.host):
        return
    configured = {"CHATLOOP_API_KEYS": settings.api_keys, "CHATLOOP_ADMIN_KEY": [settings.admin_key]}
    published = [name for name, keys in configured.items() if any(is_published(k.get_secret_value()) for k in keys)]
    secret = settings.secret_key
    if secret is None or PLACEHOLDER in secret.get_secret_value():
        published.append("CHATLOOP_SECRET_KEY")
    if published:
        raise SetupError(
            f"will not listen on {settings.host} (beyond loopback) with a published or missing key: "
            f"set {' and '.join(published)} to your own, or listen on 127.0.0.1"
        )
