"""What one principal may ask of the engine, shared by every replica through Redis, and how long this server's own
queue may grow.

A chat request is admitted (``ChatLimiter.admit``) before the engine gets any work, in one round trip to Redis: a
Lua script checks and spends both of the principal's limits at once, on Redis's clock, so that replicas whose
clocks differ still agree.

- Requests per minute: a generic cell rate algorithm (GCRA), a token bucket of ``chat_per_minute`` that refills
  evenly over the minute, kept as one timestamp per principal (the "theoretical arrival time" of the next request).
  It allows a burst of the whole minute's worth and then a steady pace, and it says exactly what OpenAI's
  ``x-ratelimit-*-requests`` headers report: how many requests are left and when the bucket is full again.
- Requests in flight: a sorted set of request ids scored by when their lease expires. The script drops expired
  members before it counts, so the slots of a server that died mid-request free themselves within ``LEASE_S``;
  a live server renews its leases every third of that. A slot is freed when its request ends, however it ends
  (``Admission.release``: synchronous, so that it also runs where the request's task is being cancelled).

The local queue bound counts the chat requests this server has admitted and not finished: beyond the engine's
batch (``max_num_seqs``) plus ``max_queued``, a request gets a 503 at once rather than a place in a queue too long
to be worth waiting in. Redis being unreachable never fails a chat (as for its record): the request is served
unlimited and the outage logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from fastapi import Response
from redis.exceptions import RedisError

from core import keys
from core.config import Settings
from server.auth import Caller, Limits
from server.errors import ApiError

log = logging.getLogger(__name__)

PERIOD_MS = 60_000
LEASE_S = 60.0
"""A slot outlives a server that died holding it by at most this long."""
BUSY_RETRY_S = 1

ADMITTED, OVER_RATE, OVER_CONCURRENCY = 0, 1, 2

_ADMIT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local limit, max_concurrent, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local interval = 60000 / limit
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
local function remaining(at) return math.max(math.floor((60000 - (at - now)) / interval), 0) end
local next_tat = tat + interval
if next_tat - now > 60000 then
  return {1, 0, math.ceil(tat - now), math.ceil(next_tat - 60000 - now)}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= max_concurrent then
  return {2, remaining(tat), math.ceil(tat - now), 0}
end
redis.call('SET', KEYS[1], string.format('%.3f', next_tat), 'PX', math.ceil(next_tat - now))
redis.call('ZADD', KEYS[2], now + lease_ms, ARGV[3])
redis.call('PEXPIRE', KEYS[2], lease_ms)
return {0, remaining(next_tat), math.ceil(next_tat - now), 0}
"""
"""KEYS: the principal's rate timestamp and its in-flight set. ARGV: requests per minute, requests in flight,
this request's id, the lease in ms. Returns (outcome, requests left, ms until the bucket is full, ms until one more
request is allowed); a refused request spends nothing."""

_RENEW = """
local t = redis.call('TIME')
local expiry = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', expiry, ARGV[i + 1])
  redis.call('PEXPIRE', key, ARGV[1])
end
"""
"""KEYS: in-flight sets; ARGV: the lease in ms, then one request id per key. Members already gone stay gone."""


def reset_duration(ms: int) -> str:
    """A duration as OpenAI writes ``x-ratelimit-reset-requests`` (Go's notation): ``12ms``, ``1.5s``, ``6m0s``."""
    if ms < 1000:
        return f"{ms}ms"
    minutes, seconds = divmod(ms / 1000, 60)
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{text}s" if minutes else f"{text}s"


def rate_headers(limits: Limits, remaining: int, reset_ms: int) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(limits.chat_per_minute),
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": reset_duration(reset_ms),
    }


@dataclass
class Admission:
    """A request's place: the headers its answer carries, and the slot it holds until ``release``."""

    limiter: ChatLimiter
    request_id: str
    active_key: str | None
    """The principal's in-flight set, or None where no slot in Redis is held (limits off, Redis away)."""
    headers: dict[str, str] = field(default_factory=dict)
    released: bool = False

    def release(self) -> None:
        """Free the slot, once; safe to call from a cancelled task (the Redis write runs in its own)."""
        if not self.released:
            self.released = True
            self.limiter.release(self)


class ChatLimiter:
    def __init__(self, client: aioredis.Redis, settings: Settings, lease_s: float = LEASE_S):
        self.client = client
        self.enabled = settings.limits.enabled
        self.capacity = settings.max_num_seqs + settings.limits.max_queued
        self.lease_ms = int(lease_s * 1000)
        self.active = 0
        """Chat requests this server admitted and has not finished."""
        self._admit = client.register_script(_ADMIT)
        self._renew = client.register_script(_RENEW)
        self._held: dict[str, str] = {}
        """Request id -> in-flight set, of the slots this server holds in Redis."""
        self._renewer: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    async def admit(self, caller: Caller) -> Admission:
        """A place for one chat request of ``caller``, or an ApiError: 503 when this server is full, 429 over one of
        the caller's limits."""
        if self.active >= self.capacity:
            raise ApiError(
                503,
                f"The server is at capacity ({self.capacity} chat requests in flight or queued); retry shortly.",
                code="server_busy",
                headers={"Retry-After": str(BUSY_RETRY_S)},
            )
        self.active += 1
        admission = Admission(self, uuid.uuid4().hex, None)
        if not self.enabled:
            return admission
        try:
            await self._hold(admission, caller)
        except RedisError as exc:
            log.warning("chat limits unchecked: Redis unreachable", extra={"error": type(exc).__name__})
        except BaseException:
            admission.release()
            raise
        return admission

    @asynccontextmanager
    async def admitted(self, caller: Caller, response: Response) -> AsyncIterator[Admission]:
        """A place held for the block: for a request answered in one piece, whose response carries the headers."""
        admission = await self.admit(caller)
        try:
            response.headers.update(admission.headers)
            yield admission
        finally:
            admission.release()

    async def _hold(self, admission: Admission, caller: Caller) -> None:
        limits = caller.limits
        rate_key, active_key = keys.chat_rate_key(caller.key_id), keys.chat_in_flight_key(caller.key_id)
        args = [limits.chat_per_minute, limits.max_concurrent, admission.request_id, self.lease_ms]
        outcome, remaining, reset_ms, retry_ms = await self._admit(keys=[rate_key, active_key], args=args)
        headers = rate_headers(limits, remaining, reset_ms)
        if outcome == OVER_RATE:
            retry_s = max(math.ceil(retry_ms / 1000), 1)
            raise ApiError(
                429,
                f"Rate limit reached for chat requests: at most {limits.chat_per_minute} per minute. "
                f"Retry in {retry_s} s.",
                code="rate_limit_exceeded",
                headers={**headers, "Retry-After": str(retry_s)},
            )
        if outcome == OVER_CONCURRENCY:
            raise ApiError(
                429,
                f"Too many chat requests at once: at most {limits.max_concurrent} in flight. Retry when one has "
                "finished.",
                code="concurrency_limit_exceeded",
                headers={**headers, "Retry-After": str(BUSY_RETRY_S)},
            )
        admission.active_key = active_key
        admission.headers = headers
        self._held[admission.request_id] = active_key
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_while_held())

    def release(self, admission: Admission) -> None:
        self.active -= 1
        if admission.active_key is None:
            return
        self._held.pop(admission.request_id, None)
        task = asyncio.create_task(self._free(admission.active_key, admission.request_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _free(self, active_key: str, request_id: str) -> None:
        try:
            await self.client.zrem(active_key, request_id)
        except RedisError:
            log.warning("chat slot not freed: Redis unreachable; its lease frees it", extra={"key": active_key})

    async def _renew_while_held(self) -> None:
        """Extend the leases of this server's slots every third of a lease, until it holds none."""
        while self._held:
            await asyncio.sleep(self.lease_ms / 3000)
            held = list(self._held.items())
            if not held:
                return
            try:
                await self._renew(keys=[key for _, key in held], args=[self.lease_ms, *(rid for rid, _ in held)])
            except RedisError:
                log.warning("chat slots not renewed: Redis unreachable", extra={"slots": len(held)})
