"""Users' gestures in Redis: a rating, a comparison or a regeneration updates its conversation's state, emits the
pairs it makes, and moves the counters of the policy versions concerned.

Who may make a gesture, and how many, is ``feedback/access.py``'s; this module decides what the gesture does. Each
rating or comparison is one optimistic transaction: read the conversation's state and the pair quotas, decide
with the pure rules of ``feedback/rules.py``, then write through ``feedback/commit.py`` only if neither changed
meanwhile (else decide again), so that two gestures on one conversation racing each other still see each other's
ratings and never emit a pair twice. The write appends the event to the event stream, the new pairs to the pair
stream, and moves the per-version counters, all or nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from core import keys
from core.config import Settings
from core.contention import attempts
from core.errors import InvalidInput
from feedback.access import AnswerAccess, Giver
from feedback.canary import count_down
from feedback.commit import REVISION, Commands, ConditionalCommit
from feedback.eligibility import NOT_A_TEACHER
from feedback.pairs import Pair, PairAnswer
from feedback.records import CompletionRecord, CompletionRecords
from feedback.retention import oldest_kept_ms
from feedback.rules import (
    ConversationState,
    PairDraft,
    Rating,
    answer_ref,
    pairs_after_comparison,
    pairs_after_rating,
    split_ref,
)
from feedback.stats import count

log = logging.getLogger(__name__)


@dataclass
class Change:
    """What one gesture does to its conversation, decided from the state before it."""

    fields: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    counters: list[tuple[str, str, int]] = field(default_factory=list)
    """(version, counter, delta)"""
    drafts: list[PairDraft] = field(default_factory=list)
    canary_downs: int = 0
    """How the count of the record's completion as a canary vote against its version moves (``feedback/canary.py``)."""


@dataclass
class Outcome:
    event_id: str
    pairs: list[Pair]
    capped: int
    """Pairs the quotas (the user's, the key's) kept out of the training data."""
    ineligible: list[str] = field(default_factory=list)
    """Why pairs the gesture made are not training data (``feedback/eligibility.py``)."""


def state_from_hash(raw: dict[bytes, bytes]) -> ConversationState:
    state = ConversationState()
    for key, value in raw.items():
        kind, _, ref = key.decode().partition(":")
        if kind == "rating":
            state.ratings[ref] = value.decode()  # type: ignore[assignment]
        elif kind == "replaces":
            state.replaces[ref] = value.decode()
        elif kind == "pair":
            state.emitted.add(ref)
    return state


def _choice_ref(record: CompletionRecord, choice_index: int, param: str) -> str:
    """The answer ``choice_index`` of ``record`` names, which must be one of its choices (``param`` says where the
    caller gave the index)."""
    if not 0 <= choice_index < len(record.choices):
        raise InvalidInput(
            f"choice_index {choice_index} is out of range: completion {record.id} has {len(record.choices)} choice(s).",
            param=param,
        )
    return answer_ref(record.id, choice_index)


def _completion_down(ratings: dict[str, Rating], record: CompletionRecord, ref: str, rating: Rating | None) -> int:
    """1 if, with ``ref`` rated ``rating``, any choice of ``record`` is rated down: a completion is one vote, whatever
    its ``n``."""
    others = [
        ratings.get(answer_ref(record.id, c.index)) for c in record.choices if answer_ref(record.id, c.index) != ref
    ]
    return int(rating == "down" or "down" in others)


def _eligible(
    drafts: list[PairDraft], records: dict[str, CompletionRecord], giver: Giver
) -> tuple[list[PairDraft], list[str]]:
    """The drafts whose two answers may be training data, and why the others may not (each reason once)."""
    eligible, reasons = [], []
    for draft in drafts:
        answers = [records.get(split_ref(ref)[0]) for ref in (draft.chosen, draft.rejected)]
        why = [reason for r in answers if r is not None for reason in r.ineligible]
        why += [] if giver.may_teach else [NOT_A_TEACHER]
        if why:
            reasons += [reason for reason in dict.fromkeys(why) if reason not in reasons]
        else:
            eligible.append(draft)
    return eligible, reasons


def _regenerated_choice(choice: str | None) -> int:
    """The index a regeneration's ``metadata.regenerate_choice`` names (0 without one), in ASCII digits:
    ``str.isdigit`` alone accepts superscripts, which ``int`` does not."""
    if choice is None:
        return 0
    if not (choice.isascii() and choice.isdigit()):
        raise InvalidInput("metadata.regenerate_choice must be a choice index.", param="metadata.regenerate_choice")
    return int(choice)


class Gestures:
    def __init__(self, client: aioredis.Redis, records: CompletionRecords, access: AnswerAccess, settings: Settings):
        self.client = client
        self.records = records
        self.access = access
        self.record_ttl_s = int(settings.record_retention_days * 86400)
        self.event_retention_s = settings.event_retention_days * 86400
        self._commit_if_unchanged = ConditionalCommit(client)

    # ---- gestures ---------------------------------------------------------------------------------------

    async def rate(
        self, giver: Giver, completion_id: str, choice_index: int, rating: Rating | None, reason: str | None
    ) -> Outcome:
        (record,) = await self.access.owned_records(giver.key_id, giver.user, [completion_id], gesture=True)
        ref = _choice_ref(record, choice_index, "choice_index")

        def plan(state: ConversationState) -> Change:
            change = Change(drafts=pairs_after_rating(state, ref, rating))
            old = state.ratings.get(ref)
            if old == rating:
                return change
            if old is not None:
                change.counters.append((record.version, old, -1))
            if rating is None:
                change.deleted.append(f"rating:{ref}")
            else:
                change.fields[f"rating:{ref}"] = rating
                change.counters.append((record.version, rating, 1))
            change.canary_downs = _completion_down(state.ratings, record, ref, rating) - _completion_down(
                state.ratings, record, ref, old
            )
            return change

        event = {"type": "rating", "answer": ref, "rating": rating, "reason": reason}
        return await self._commit(giver, record, event, plan)

    async def compare(self, giver: Giver, chosen: tuple[str, int], rejected: tuple[str, int]) -> Outcome:
        chosen_record, rejected_record = await self.access.owned_records(
            giver.key_id, giver.user, [chosen[0], rejected[0]], gesture=True
        )
        chosen_ref = _choice_ref(chosen_record, chosen[1], "chosen.choice_index")
        rejected_ref = _choice_ref(rejected_record, rejected[1], "rejected.choice_index")
        if chosen_ref == rejected_ref:
            raise InvalidInput("chosen and rejected are the same answer.", param="rejected")
        if chosen_record.conversation_id != rejected_record.conversation_id:
            raise InvalidInput(
                "chosen and rejected answer different conversations; only answers to the same messages "
                "can be compared.",
                param="rejected",
                code="different_conversations",
            )

        def plan(state: ConversationState) -> Change:
            drafts = pairs_after_comparison(state, chosen_ref, rejected_ref)
            counters = [(chosen_record.version, "wins", 1), (rejected_record.version, "losses", 1)] if drafts else []
            return Change(drafts=drafts, counters=counters)

        event = {"type": "comparison", "chosen": chosen_ref, "rejected": rejected_ref}
        return await self._commit(giver, chosen_record, event, plan, known=[rejected_record])

    # ---- regenerations ----------------------------------------------------------------------------------

    async def check_regeneration(
        self, key_id: str, user: str | None, replaced: str, choice: str | None, conversation_id: str
    ) -> str:
        """A regeneration must name an answer its caller received, to the same conversation. Returns the version
        that wrote the replaced answer, which ``link_regeneration`` counts the regeneration against."""
        (record,) = await self.access.owned_records(key_id, user, [replaced], gesture=False)
        index = _regenerated_choice(choice)
        _choice_ref(record, index, "metadata.regenerate_choice")
        if record.conversation_id != conversation_id:
            raise InvalidInput(
                f"A regeneration must repeat the messages of the completion it replaces ({replaced}).",
                param="messages",
                code="different_conversations",
            )
        return record.version

    async def link_regeneration(self, record: CompletionRecord, replaced_version: str) -> None:
        """Record that each choice of ``record`` replaces the answer its metadata names, which ``replaced_version``
        wrote (as ``check_regeneration`` found it)."""
        replaced_ref = answer_ref(
            record.metadata["regenerate_of"], _regenerated_choice(record.metadata.get("regenerate_choice"))
        )
        conversation = keys.conversation_key(record.conversation_id)
        event = {"type": "regeneration", "answer": record.id, "replaces": replaced_ref}
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            conversation, mapping={f"replaces:{answer_ref(record.id, c.index)}": replaced_ref for c in record.choices}
        )
        pipe.hincrby(conversation, REVISION, 1)
        pipe.expire(conversation, self.record_ttl_s)
        count(pipe, replaced_version, "regenerations", 1)
        self._append_event(pipe, record, event)
        await pipe.execute()

    # ---- the transaction --------------------------------------------------------------------------------

    async def _commit(
        self,
        giver: Giver,
        record: CompletionRecord,
        event: dict,
        plan: Callable[[ConversationState], Change],
        known: list[CompletionRecord] | None = None,
    ) -> Outcome:
        """Apply ``plan`` to ``record``'s conversation; ``known`` are other records already read, not read again.
        Decided from one read of the state and quotas, written if none changed meanwhile, else decided again."""
        conversation = keys.conversation_key(record.conversation_id)
        quotas = self.access.quotas(record, giver.pairs_per_hour)
        for _ in attempts("This conversation's feedback"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(conversation)
            for quota in quotas:
                pipe.get(quota)
            raw_state, *used = await pipe.execute()
            change = plan(state_from_hash(raw_state))
            records = await self._records([record, *(known or [])], change.drafts)
            eligible, ineligible = _eligible(change.drafts, records, giver)
            room = min(self.access.quota_room(u, allowed) for u, allowed in zip(used, quotas.values(), strict=True))
            pairs = self._pairs(record, records, eligible[:room])
            commands = Commands()
            self._write(commands, record, list(quotas), change, pairs)
            outcome = {"pairs": [p.pair_id for p in pairs]} | ({"ineligible": ineligible} if ineligible else {})
            event_id = self._append_event(commands, record, event | outcome)
            revision = raw_state.get(REVISION.encode(), b"").decode()
            read = {quota: (u or b"").decode() for quota, u in zip(quotas, used, strict=True)}
            if await self._commit_if_unchanged(conversation, revision, read, commands):
                break
        capped = len(eligible) - len(pairs)
        if capped:
            log.info("pair quota reached", extra={"user_id": record.user_id, "capped": capped})
        return Outcome(event_id=event_id, pairs=pairs, capped=capped, ineligible=ineligible)

    def _write(
        self, commands: Commands, record: CompletionRecord, quotas: list[str], change: Change, pairs: list[Pair]
    ) -> None:
        conversation = keys.conversation_key(record.conversation_id)
        fields = change.fields | {f"pair:{draft.key}": "1" for draft in change.drafts}
        if fields:
            commands.hset(conversation, mapping=fields)
        if change.deleted:
            commands.hdel(conversation, *change.deleted)
        commands.hincrby(conversation, REVISION, 1)
        commands.expire(conversation, self.record_ttl_s)
        for version, counter, delta in change.counters:
            count(commands, version, counter, delta)
        if change.canary_downs and record.canary_period is not None:
            count_down(commands, record.canary_period, record.version, change.canary_downs)
        if pairs:
            for quota in quotas:
                self.access.spend_quota(commands, quota, len(pairs))
        for pair in pairs:
            commands.xadd(keys.PAIRS_STREAM, {"pair": pair.model_dump_json()}, minid=oldest_kept_ms(self.record_ttl_s))

    def _append_event(self, commands: Commands | Pipeline, record: CompletionRecord, event: dict) -> str:
        """Queue the event and return its id: ours, so that the caller knows it before the writes run."""
        event_id = f"evt-{uuid.uuid4().hex}"
        payload = {
            "id": event_id,
            "created": time.time(),
            "user_id": record.user_id,
            "conversation_id": record.conversation_id,
            **event,
        }
        commands.xadd(keys.EVENTS_STREAM, {"event": json.dumps(payload)}, minid=oldest_kept_ms(self.event_retention_s))
        return event_id

    async def _records(self, known: list[CompletionRecord], drafts: list[PairDraft]) -> dict[str, CompletionRecord]:
        """The records of every answer the drafts name: ``known`` (the gesture's own), and the other completions of
        the same conversation they name, read here. An expired one is missing: no text to train on."""
        records = {r.id: r for r in known}
        missing = {split_ref(ref)[0] for draft in drafts for ref in (draft.chosen, draft.rejected)} - set(records)
        fetched = await asyncio.gather(*(self.records.get(completion_id) for completion_id in missing))
        return records | {r.id: r for r in fetched if r is not None}

    def _pairs(
        self, record: CompletionRecord, records: dict[str, CompletionRecord], drafts: list[PairDraft]
    ) -> list[Pair]:
        now = time.time()
        pairs = []
        for draft in drafts:
            chosen, rejected = self._answer(records, draft.chosen), self._answer(records, draft.rejected)
            if chosen is None or rejected is None:
                continue
            pairs.append(
                Pair(
                    pair_id=f"pair-{uuid.uuid4().hex}",
                    conversation_id=record.conversation_id,
                    user_id=record.user_id,
                    principal_id=record.principal_id,
                    prompt=record.conversation,
                    tools=record.tools,
                    chosen=chosen,
                    rejected=rejected,
                    rule=draft.rule,
                    weight=draft.weight,
                    created=now,
                    answered=max(records[chosen.completion_id].finished, records[rejected.completion_id].finished),
                )
            )
        return pairs

    @staticmethod
    def _answer(records: dict[str, CompletionRecord], ref: str) -> PairAnswer | None:
        completion_id, index = split_ref(ref)
        record = records.get(completion_id)
        if record is None:
            return None
        choice = record.choices[index]
        return PairAnswer(
            completion_id=completion_id,
            choice_index=index,
            text=choice.text,
            version=record.version,
            finish_reason=choice.finish_reason,
        )
