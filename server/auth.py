"""API keys: user keys reach the chat endpoints, the admin key reaches everything.

A key is never stored or logged; records name the caller by ``key_id``, a short hash of the key, so that later
features (who may rate an answer) can check ownership without keeping the secret. Routes reach these checks
through ``server/dependencies.py``. Keys that anyone can read (the local defaults, the deploy files' placeholders)
are refused before a server that other machines can reach starts (``refuse_published_keys``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

from fastapi import Request

from core.config import LOCAL_ADMIN_KEY, LOCAL_API_KEY, Settings
from core.errors import SetupError
from server.errors import ApiError

PUBLISHED_KEYS = frozenset({LOCAL_API_KEY, LOCAL_ADMIN_KEY})
PLACEHOLDER = "REPLACE-ME"


@dataclass(frozen=True)
class Caller:
    key_id: str
    is_admin: bool


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
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


def authenticate(settings: Settings, request: Request) -> Caller:
    token = _bearer_token(request)
    if _matches(token, settings.admin_key.get_secret_value()):
        return Caller(key_id=key_id(token), is_admin=True)
    if any(_matches(token, key.get_secret_value()) for key in settings.api_keys):
        return Caller(key_id=key_id(token), is_admin=False)
    raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")


def require_admin(caller: Caller) -> Caller:
    """Operator endpoints take the admin key only."""
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
    operator. The ``SetupError`` names the variables to set; the chatloop command asks before it starts anything."""
    if is_loopback(settings.host):
        return
    configured = {"CHATLOOP_API_KEYS": settings.api_keys, "CHATLOOP_ADMIN_KEY": [settings.admin_key]}
    published = [name for name, keys in configured.items() if any(is_published(k.get_secret_value()) for k in keys)]
    if published:
        raise SetupError(
            f"will not listen on {settings.host} (beyond loopback) with a published key: "
            f"set {' and '.join(published)} to your own, or listen on 127.0.0.1"
        )
