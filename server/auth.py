"""API keys: user keys reach the chat endpoints, the admin key reaches everything.

A key is never stored or logged; records name the caller by ``key_id``, a short hash of the key, so that later
features (who may rate an answer) can check ownership without keeping the secret. Routes reach these checks
through ``server/dependencies.py``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from fastapi import Request

from core.config import Settings
from server.errors import ApiError


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
