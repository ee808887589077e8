"""Counting sign-in attempts, per account and per address, before a password is checked: guessing is slow for
anyone, and checking costs the server tens of milliseconds of CPU (``passwords.py``) that only counted attempts get."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from core import keys
from core.config import AccountSettings
from core.errors import RateLimited

WINDOW_S = 60


def account_subject(account: str) -> str:
    """The subject under which one account's sign-in attempts are counted (``keys.signin_attempts_key``)."""
    return f"account:{account}"


class SigninAttempts:
    def __init__(self, client: aioredis.Redis, settings: AccountSettings):
        self.client = client
        self.settings = settings

    async def count(self, account: str | None, address: str) -> None:
        """Count one attempt; RateLimited if either counter is past its limit over the last minute."""
        minute, elapsed = divmod(time.time(), WINDOW_S)
        window = int(minute)
        counted = [(f"address:{address}", self.settings.signin_per_minute_address)]
        if account is not None:
            counted.append((account_subject(account), self.settings.signin_per_minute_account))
        pipe = self.client.pipeline(transaction=False)
        for subject, _ in counted:
            key = keys.signin_attempts_key(subject, window)
            pipe.incr(key)
            pipe.expire(key, WINDOW_S * 2)
            pipe.get(keys.signin_attempts_key(subject, window - 1))
        replies = await pipe.execute()
        estimates = [
            sliding_count(current, int(previous or 0), elapsed)
            for current, previous in zip(replies[0::3], replies[2::3], strict=True)
        ]
        if any(estimate > limit for estimate, (_, limit) in zip(estimates, counted, strict=True)):
            retry = WINDOW_S - int(elapsed)
            raise RateLimited(
                f"Too many sign-in attempts; retry in {retry} s.", retry_after_s=retry, code="signin_rate_limited"
            )


def sliding_count(current: int, previous: int, elapsed_s: float) -> float:
    """Attempts over the last minute, estimated from this minute's count and the share of the last minute's that
    falls within it. A fixed window alone would let twice the limit through across its boundary."""
    return current + previous * (1 - elapsed_s / WINDOW_S)
