"""Erasure: a person's data taken back from every place the loop copied it to.

An answer's text is in its completion record, and is copied into the pairs made from it; a user's id is in the
records, the events, the pairs, the conversations' feedback state and the per-user counters. An erasure finds the
records through the per-user index that ``feedback/records.py`` keeps, deletes them and their conversations'
state, and deletes (``XDEL``, not expiry) the stream entries that name the user: completions, events and pairs.
Later exports and rounds read the streams, so they never see them again. A version already trained on erased
pairs cannot unlearn them: the registry counts them on the version (``erased_pairs``) so that an operator can
retire it. The erasure itself is recorded with its counts, never with what it erased.

Redis commands run in batches: the streams are read ``SCAN_BATCH`` entries at a time, which an erasure, rare and
run by an operator, can afford; the hot paths pay only for the index.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

import redis
from pydantic import BaseModel

from core import keys
from core.registry import Registry, Version
from feedback.records import CompletionRecord

SCAN_BATCH = 1000


class ErasureReport(BaseModel):
    completions: int
    conversations: int
    events: int
    pairs: int
    versions: dict[str, int]
    """Versions trained on pairs this erasure removed -> how many of those pairs."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(fields: dict, name: str) -> str:
    return _text(fields.get(name.encode(), fields.get(name, b"")))


class Erasure:
    def __init__(self, client: redis.Redis):
        self.client = client
        self.registry = Registry(client)

    def erase(self, user_ids: set[str], *, also: Iterable[str], who: str, kind: str) -> ErasureReport:
        """Remove everything stored for ``user_ids``, and the keys matching the patterns ``also`` (a principal's
        counters, for instance), then record the erasure as ``kind`` by ``who``."""
        completion_ids = self._completion_ids(user_ids)
        conversations = self._conversation_ids(completion_ids)
        self._delete(
            [
                *(keys.completion_key(c) for c in completion_ids),
                *(keys.in_flight_key(c) for c in completion_ids),
                *(keys.conversation_key(c) for c in conversations),
                *(keys.user_completions_key(u) for u in user_ids),
                *self._matching([*_user_counters(user_ids), *also]),
            ]
        )
        self._xdel(
            keys.COMPLETIONS_STREAM, self._scan(keys.COMPLETIONS_STREAM, lambda f: _field(f, "id") in completion_ids)
        )
        events = self._scan(keys.EVENTS_STREAM, lambda f: json.loads(_field(f, "event")).get("user_id") in user_ids)
        self._xdel(keys.EVENTS_STREAM, events)
        pair_ids: list[str] = []
        pair_entries = self._scan(keys.PAIRS_STREAM, lambda f: self._erased_pair(f, user_ids, pair_ids))
        self._xdel(keys.PAIRS_STREAM, pair_entries)
        if pair_entries:
            self._forget_delivery(pair_entries)
        report = ErasureReport(
            completions=len(completion_ids),
            conversations=len(conversations),
            events=len(events),
            pairs=len(pair_entries),
            versions=self._mark_versions(pair_ids, who),
        )
        entry = {"at": time.time(), "by": who, "kind": kind, **report.model_dump()}
        self.client.xadd(keys.ERASURES, {"erasure": json.dumps(entry)})
        return report

    # ---- finding ---------------------------------------------------------------------------------------------

    def _completion_ids(self, user_ids: set[str]) -> set[str]:
        pipe = self.client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.smembers(keys.user_completions_key(user_id))
        return {_text(member) for members in pipe.execute() for member in members}

    def _conversation_ids(self, completion_ids: set[str]) -> set[str]:
        ordered = sorted(completion_ids)
        found = set()
        for start in range(0, len(ordered), SCAN_BATCH):
            raws = self.client.mget([keys.completion_key(c) for c in ordered[start : start + SCAN_BATCH]])
            found |= {CompletionRecord.model_validate_json(raw).conversation_id for raw in raws if raw is not None}
        return found

    def _matching(self, patterns: list[str]) -> list[str]:
        return [_text(key) for pattern in patterns for key in self.client.scan_iter(match=pattern, count=SCAN_BATCH)]

    def _scan(self, stream: str, matches: Callable[[dict], bool]) -> list[str]:
        """The ids of the stream's entries whose fields ``matches``, read a batch at a time."""
        found, start = [], "-"
        while True:
            entries = self.client.xrange(stream, min=start, max="+", count=SCAN_BATCH)
            found += [_text(entry_id) for entry_id, fields in entries if matches(fields)]
            if len(entries) < SCAN_BATCH:
                return found
            start = f"({_text(entries[-1][0])}"

    @staticmethod
    def _erased_pair(fields: dict, user_ids: set[str], pair_ids: list[str]) -> bool:
        pair = json.loads(_field(fields, "pair"))
        if pair.get("user_id") not in user_ids:
            return False
        pair_ids.append(pair["pair_id"])
        return True

    # ---- removing --------------------------------------------------------------------------------------------

    def _delete(self, names: list[str]) -> None:
        for start in range(0, len(names), SCAN_BATCH):
            self.client.delete(*names[start : start + SCAN_BATCH])

    def _xdel(self, stream: str, entry_ids: list[str]) -> None:
        for start in range(0, len(entry_ids), SCAN_BATCH):
            self.client.xdel(stream, *entry_ids[start : start + SCAN_BATCH])

    def _forget_delivery(self, entry_ids: list[str]) -> None:
        """A pair the trainer read and has not acknowledged stays in its pending list after the XDEL; acknowledged
        now, it is neither retried nor counted as waiting."""
        try:
            for start in range(0, len(entry_ids), SCAN_BATCH):
                self.client.xack(keys.PAIRS_STREAM, keys.TRAINER_GROUP, *entry_ids[start : start + SCAN_BATCH])
        except redis.ResponseError:
            pass  # no trainer has made its group yet: nothing was delivered

    def _mark_versions(self, pair_ids: list[str], who: str) -> dict[str, int]:
        if not pair_ids:
            return {}
        marked = {}
        for version in self.registry.all():
            trained_on = keys.version_pairs_key(version.id)
            hits = [
                pair for pair, hit in zip(pair_ids, self.client.smismember(trained_on, pair_ids), strict=True) if hit
            ]
            if not hits:
                continue
            self.client.srem(trained_on, *hits)
            marked[version.id] = len(hits)
            self.registry.amend(
                version.id, _erased(len(hits)), who, f"{len(hits)} of the pairs it was trained on were erased"
            )
        return marked


def _user_counters(user_ids: set[str]) -> list[str]:
    """Patterns of the per-user counters, one key per time window."""
    return [
        counter(user_id, keys.EVERY_WINDOW)
        for user_id in user_ids
        for counter in (keys.rate_limit_key, keys.pair_quota_key)
    ]


def _erased(count: int) -> Callable[[Version], dict[str, object]]:
    return lambda version: {"erased_pairs": version.erased_pairs + count}
