"""Passwords hashed with argon2id through argon2-cffi, at its defaults (RFC 9106's second recommended set).

Hashing costs tens of milliseconds of CPU by design, so it runs in a thread, and sign-in attempts are counted before
it runs (``server/identity/signin.py``). An account without a password, or no account at all, is checked against a
dummy hash, so that the time taken does not tell which names exist.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8
MAX_LENGTH = 256
"""Checked before hashing: argon2 takes any length, and a long one costs time."""

_HASHER = PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _HASHER.hash("chatloop dummy password")


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_HASHER.hash, password)


async def verify_password(stored: str | None, password: str) -> bool:
    return await asyncio.to_thread(_verify, stored, password)
