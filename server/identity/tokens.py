"""The random secrets handed to people and apps (session cookies, sign-in links, API keys) and the hash under which
each is stored. These secrets carry 256 random bits, so a fast hash suffices: no one can guess one to match."""

from __future__ import annotations

import hashlib
import secrets


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
