"""Who may give feedback on an answer, and how much: ownership, the per-minute gesture limit, the hourly pair quotas.

An answer belongs to the API key and ``user`` that received it; anyone else is told it does not exist, exactly as
for an unknown id, so that ids cannot be probed. The gesture limit is counted in the same round trip to Redis as
the records are read (each round trip costs the server more than Redis does: ``docs/benchmarks.md``). The pair
quotas (one per user; and one per API key or account, across its users, where it has one: ``pairs_per_hour`` of a
managed key) are read and spent inside a gesture's optimistic transaction (``feedback/gestures.py``), which these
methods only name and size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from core import keys
from core.config import Settings
from core.errors import InProgress, NotFound, RateLimited
from core.keyed_ids import KeyedIds
from feedback.commit import Commands
from feedback.records import CompletionRecord

RATE_WINDOW_S = 60
QUOTA_WINDOW_S = 3600


@dataclass(frozen=True)
class Giver:
    """Who sends a gesture: the API key or account (``key_id``) and the ``user`` it names, the pairs that principal
    may add per hour across its users, and whether it may teach at all (``feedback/eligibility.py``)."""

    key_id: str
    user: str | None
    pairs_per_hour: int
    may_teach: bool


def _not_found(completion_id: str) -> NotFound:
    return NotFound(
        f"No completion found with id '{completion_id}'.", param="completion_id", code="completion_not_found"
    )


class AnswerAccess:
    def __init__(self, client: aioredis.Redis, settings: Settings, ids: KeyedIds):
        self.client = client
        self.settings = settings
        self.ids = ids

    async def owned_records(
        self, key_id: str, user: str | None, completion_ids: list[str], *, gesture: bool
    ) -> list[CompletionRecord]:
        """The records, if this key and user received them; NotFound otherwise, which says nothing of whether one
        exists for someone else. An answer still streaming is InProgress (for its owner only). A ``gesture`` also
        counts against the user's rate limit, in the same round trip to Redis as the records, whatever the ids."""
        uid = self.ids.user_id(key_id, user)
        rate_key = keys.rate_limit_key(uid, int(time.time() // RATE_WINDOW_S))
        pipe = self.client.pipeline(transaction=False)
        for completion_id in completion_ids:
            pipe.get(keys.completion_key(completion_id))
        if gesture:
            pipe.incr(rate_key)
            pipe.expire(rate_key, RATE_WINDOW_S * 2)
        replies = await pipe.execute()
        if gesture:
            self._check_rate(replies[len(completion_ids)])
        return [
            await self._owned(key_id, user, uid, completion_id, raw)
            for completion_id, raw in zip(completion_ids, replies[: len(completion_ids)], strict=True)
        ]

    async def _owned(
        self, key_id: str, user: str | None, uid: str, completion_id: str, raw: bytes | None
    ) -> CompletionRecord:
        if raw is None:
            owner = await self.client.get(keys.in_flight_key(completion_id))
            if owner is not None and owner.decode() == uid:
                raise InProgress(
                    "This completion is still being generated; rate it once it has finished.",
                    param="completion_id",
                    code="completion_in_progress",
                )
            raise _not_found(completion_id)
        record = CompletionRecord.model_validate_json(raw)
        if record.key_id != key_id or record.user != user:
            raise _not_found(completion_id)
        return record

    def _check_rate(self, count: int) -> None:
        """A fixed one-minute window per user: cheap (one INCR), and the limit is per person, not per key."""
        if count > self.settings.feedback_per_minute:
            retry = RATE_WINDOW_S - int(time.time()) % RATE_WINDOW_S
            raise RateLimited(
                f"Too much feedback: at most {self.settings.feedback_per_minute} per minute. Retry in {retry} s.",
                retry_after_s=retry,
                code="rate_limit_exceeded",
            )

    def quotas(self, record: CompletionRecord, principal_pairs_per_hour: int) -> dict[str, int]:
        """The quotas that pairs from ``record``'s answers count against: each counter of this hour -> the pairs
        it allows. The user's, and the principal's (the API key's or account's) across all its users."""
        window = int(time.time() // QUOTA_WINDOW_S)
        return {
            keys.pair_quota_key(record.user_id, window): self.settings.pairs_per_hour,
            keys.key_pair_quota_key(record.principal_id, window): principal_pairs_per_hour,
        }

    @staticmethod
    def quota_room(used: bytes | None, allowed: int) -> int:
        """How many more pairs a quota admits, given its counter's value as read (None: none used)."""
        return max(allowed - int(used or 0), 0)

    @staticmethod
    def spend_quota(commands: Commands, quota: str, pairs: int) -> None:
        commands.incrby(quota, pairs)
        commands.expire(quota, QUOTA_WINDOW_S * 2)
