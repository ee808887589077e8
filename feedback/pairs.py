"""Preference pairs: their shape, and how the trainer reads them exactly once through a Redis consumer group.

A consumer reads new pairs (``XREADGROUP``), first taking over pairs that another consumer read but never
acknowledged within ``claim_idle_s`` (``XAUTOCLAIM``: that consumer died), and acknowledges them (``XACK``) only
once what it did with them is recorded. Reading is synchronous: the trainer and the CLI are plain processes.
"""

from __future__ import annotations

import redis
from pydantic import BaseModel

from core import keys
from feedback.records import RecordedMessage

DEFAULT_CLAIM_IDLE_S = 600.0


class PairAnswer(BaseModel):
    completion_id: str
    choice_index: int
    text: str
    version: str
    finish_reason: str | None = None
    """Why the engine stopped: "stop" (the answer ended), "length" (it ran into max_tokens); None in pairs
    stored before this field, which the trainer takes as ended."""

    @property
    def ended(self) -> bool:
        """Whether the answer ended where it stops, rather than being cut off by its token limit."""
        return self.finish_reason != "length"


class Pair(BaseModel):
    pair_id: str
    conversation_id: str
    user_id: str
    principal_id: str = ""
    """The API key or account that taught it (keyed, ``core/keyed_ids.py``); empty in pairs stored before this
    field, which the trainer's share cap then counts by ``user_id``."""
    prompt: list[RecordedMessage]
    chosen: PairAnswer
    rejected: PairAnswer
    rule: str
    weight: float
    created: float
    """When the gesture that made the pair was accepted."""
    answered: float
    """When the later of the two answers was written."""


def _parse(entries: list[tuple[bytes | str, dict]]) -> list[tuple[str, Pair]]:
    parsed = []
    for entry_id, fields in entries:
        raw = fields.get(b"pair", fields.get("pair"))
        key = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        parsed.append((key, Pair.model_validate_json(raw)))
    return parsed


def read_all(client: redis.Redis, start: str = "-", end: str = "+") -> list[tuple[str, Pair]]:
    """Every pair in the stream between two stream ids, without touching any consumer group (for export)."""
    return _parse(client.xrange(keys.PAIRS_STREAM, start, end))


class PairConsumer:
    def __init__(
        self,
        client: redis.Redis,
        consumer: str,
        group: str = keys.TRAINER_GROUP,
        claim_idle_s: float = DEFAULT_CLAIM_IDLE_S,
    ):
        self.client = client
        self.consumer = consumer
        self.group = group
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self._ensure_group()

    def _ensure_group(self) -> None:
        """Create the group at the stream's start, so that pairs written before any trainer ran are read too."""
        try:
            self.client.xgroup_create(keys.PAIRS_STREAM, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, count: int, block_ms: int | None = None) -> list[tuple[str, Pair]]:
        """Up to ``count`` pairs: abandoned ones first, then new ones."""
        _, claimed, _ = self.client.xautoclaim(
            keys.PAIRS_STREAM, self.group, self.consumer, self.claim_idle_ms, start_id="0-0", count=count
        )
        pairs = _parse([entry for entry in claimed if entry[1]])  # trimmed entries come back empty
        if len(pairs) < count:
            fresh = self.client.xreadgroup(
                self.group, self.consumer, {keys.PAIRS_STREAM: ">"}, count=count - len(pairs), block=block_ms
            )
            for _, entries in fresh or []:
                pairs += _parse(entries)
        return pairs

    def pending(self) -> int:
        """Pairs read by some consumer of the group and not yet acknowledged."""
        return int(self.client.xpending(keys.PAIRS_STREAM, self.group)["pending"])

    def ack(self, entry_ids: list[str]) -> int:
        return int(self.client.xack(keys.PAIRS_STREAM, self.group, *entry_ids)) if entry_ids else 0

    def ack_in(self, pipe: redis.client.Pipeline, entry_ids: list[str]) -> None:
        """Queue the acknowledgement in the caller's transaction, to land together with what was made of them."""
        if entry_ids:
            pipe.xack(keys.PAIRS_STREAM, self.group, *entry_ids)

    def waiting(self) -> int:
        """Pairs not yet delivered to the group, plus those delivered and never acknowledged."""
        groups = {g["name"]: g for g in self.client.xinfo_groups(keys.PAIRS_STREAM)}
        group = groups.get(self.group.encode(), groups.get(self.group, {}))
        return int(group.get("lag") or 0) + int(group.get("pending") or 0)
