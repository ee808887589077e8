"""Preference pairs: their shape, and how the trainer reads them exactly once through a Redis consumer group.

A consumer reads new pairs (``XREADGROUP``), first taking over pairs that another consumer read but never
acknowledged within ``claim_idle_s`` (``XAUTOCLAIM``: that consumer died), and acknowledges them (``XACK``) only
once what it did with them is recorded. A group that vanished (Redis lost its data, someone deleted it) is created
again, with a warning, at the stream's end. Reading is synchronous: the trainer and the CLI are plain processes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from pydantic import BaseModel

from core import keys
from feedback.records import RecordedMessage

log = logging.getLogger(__name__)

DEFAULT_CLAIM_IDLE_S = 600.0
T = TypeVar("T")


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
    tools: list[dict[str, Any]] | None = None
    """The tools the model was given, which its prompt rendered (``core/chat_template.py``): the trainer renders
    them alike."""
    chosen: PairAnswer
    rejected: PairAnswer
    rule: str
    weight: float
    created: float
    """When the gesture that made the pair was accepted."""
    answered: float
    """When the later of the two answers was written."""


def _group_missing(exc: redis.ResponseError) -> bool:
    """Whether Redis refused because the consumer group, or its stream, does not exist."""
    message = str(exc)
    return message.startswith("NOGROUP") or "no such key" in message.lower()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse(entries: list[tuple[bytes | str, dict]]) -> list[tuple[str, Pair]]:
    parsed = []
    for entry_id, fields in entries:
        raw = fields.get(b"pair", fields.get("pair"))
        parsed.append((_text(entry_id), Pair.model_validate_json(raw)))
    return parsed


def read_all(client: redis.Redis, start: str = "-", end: str = "+") -> list[tuple[str, Pair]]:
    """Every pair in the stream between two stream ids, without touching any consumer group (for export)."""
    return _parse(client.xrange(keys.PAIRS_STREAM, start, end))


def read_entries(client: redis.Redis, entry_ids: list[str]) -> list[tuple[str, Pair]]:
    """The pairs of these stream entries, in one round trip; an entry trimmed or erased since is left out."""
    pipe = client.pipeline(transaction=False)
    for entry_id in entry_ids:
        pipe.xrange(keys.PAIRS_STREAM, entry_id, entry_id)
    return _parse([entry for found in pipe.execute() for entry in found])


def read_newest(client: redis.Redis, count: int, before: str = "+") -> list[tuple[str, Pair]]:
    """Up to ``count`` pairs, newest first, from ``before`` (an entry id, exclusive when it starts with ``(``)."""
    return _parse(client.xrevrange(keys.PAIRS_STREAM, before, "-", count=count))


def sample_over_time(client: redis.Redis, probes: int, rng: random.Random) -> list[tuple[str, Pair]]:
    """Distinct pairs from anywhere in the stream, at most ``probes``, read without reading the stream: each probe
    draws a moment between the first pair and the last and reads the first pair stored from then on, all in one
    round trip. The cost is that of ``probes`` lookups however long the stream is.

    Uniform over time, not over pairs: a pair from a busy hour is drawn less often than one from a quiet hour, the
    price of not counting the pairs in between (Redis streams have no rank lookup)."""
    try:
        info = client.xinfo_stream(keys.PAIRS_STREAM)
    except redis.ResponseError:  # no stream
        return []
    if not info["length"] or not probes:
        return []
    first, last = (int(_text(info[end][0]).split("-")[0]) for end in ("first-entry", "last-entry"))
    pipe = client.pipeline(transaction=False)
    for _ in range(probes):
        pipe.xrange(keys.PAIRS_STREAM, f"{rng.randint(first, last)}-0", "+", count=1)
    found = dict(_parse([entry for entries in pipe.execute() for entry in entries]))
    return list(found.items())


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
        self._create_group()

    def _create_group(self, at: str = "0", entries_read: int | None = None) -> None:
        """The group, from stream id ``at`` (``0``: at start-up, so that pairs written before any trainer ran are
        read too), unless it exists. ``entries_read`` (the entries up to ``at``) lets Redis count the group's lag
        from an id other than the stream's first."""
        try:
            self.client.xgroup_create(keys.PAIRS_STREAM, self.group, id=at, mkstream=True, entries_read=entries_read)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _recreate_group(self) -> None:
        """The group again after it vanished (a Redis restarted without its data, a ``FLUSHDB``, a failover to a
        replica that lagged, someone's ``XGROUP DESTROY``): from the stream's end, since what it had read is
        unknown and reading every stored pair as new would train on them all again. Pairs stored meanwhile are
        still in the stream, where rounds sample earlier pairs."""
        log.warning(
            "the pairs' consumer group was gone: created again at the stream's end",
            extra={"stream": keys.PAIRS_STREAM, "group": self.group},
        )
        try:
            stream = self.client.xinfo_stream(keys.PAIRS_STREAM)
        except redis.ResponseError:  # no stream: the start is its end
            self._create_group()
            return
        self._create_group(at=_text(stream["last-generated-id"]), entries_read=int(stream["entries-added"]))

    def _with_group(self, call: Callable[[], T]) -> T:
        """``call``, and once more after recreating the group if Redis said the group or the stream is gone."""
        try:
            return call()
        except redis.ResponseError as exc:
            if not _group_missing(exc):
                raise
        self._recreate_group()
        return call()

    def read(self, count: int, block_ms: int | None = None) -> list[tuple[str, Pair]]:
        """Up to ``count`` pairs: abandoned ones first, then new ones."""
        return self._with_group(lambda: self._read(count, block_ms))

    def _read(self, count: int, block_ms: int | None) -> list[tuple[str, Pair]]:
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
        return int(self._with_group(lambda: self.client.xpending(keys.PAIRS_STREAM, self.group))["pending"])

    def ack(self, entry_ids: list[str]) -> int:
        return int(self.client.xack(keys.PAIRS_STREAM, self.group, *entry_ids)) if entry_ids else 0

    def ack_in(self, pipe: redis.client.Pipeline, entry_ids: list[str]) -> None:
        """Queue the acknowledgement in the caller's transaction, to land together with what was made of them."""
        if entry_ids:
            pipe.xack(keys.PAIRS_STREAM, self.group, *entry_ids)

    def waiting(self) -> int:
        """Pairs not yet delivered to the group, plus those delivered and never acknowledged."""
        group = self._with_group(self._group_info)
        return int(group.get("lag") or 0) + int(group.get("pending") or 0)

    def _group_info(self) -> dict:
        groups = {g["name"]: g for g in self.client.xinfo_groups(keys.PAIRS_STREAM)}
        group = groups.get(self.group.encode(), groups.get(self.group))
        if group is None:
            raise redis.ResponseError(f"NOGROUP no group {self.group!r} on {keys.PAIRS_STREAM}")
        return group
