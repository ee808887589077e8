"""Completion records: what was asked, what each choice answered, and which policy version wrote it.

Every answer the server gives is recorded, because every answer may later be rated, regenerated or compared,
and the trainer draws its prompts from what users really asked. A record is one JSON value with a TTL
(the retention setting), and its id is appended to a stream trimmed to the same window, so that readers can walk
recent completions in order without scanning keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import cached_property
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer
from redis.asyncio.client import Pipeline

from core import keys
from core.keyed_ids import KeyedIds
from feedback.canary import count_served
from feedback.retention import oldest_kept_ms
from feedback.stats import count

log = logging.getLogger(__name__)


class RecordedMessage(BaseModel):
    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None = None
    """An assistant message's calls, in the chat template's shape (arguments as objects)."""
    tool_call_id: str | None = None

    @model_serializer(mode="wrap")
    def _without_absent_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A message without tool fields reads as before they existed: in records, pairs, exports and the hashes
        that name conversations."""
        return {key: value for key, value in handler(self).items() if value is not None}


class RecordedChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    completion_tokens: int


def conversation_id(user: str, messages: list[RecordedMessage]) -> str:
    """Answers of one user to the same messages share it: the scope of the pair rules (feedback/rules.py)."""
    canonical = json.dumps([m.model_dump() for m in messages], sort_keys=True)
    return hashlib.sha256(f"{user}\0{canonical}".encode()).hexdigest()[:24]


class WeightChange(BaseModel):
    """The active version's weights were swapped while this answer was generated: its tokens from
    ``after_tokens`` on (summed over choices) came from ``active``'s weights (plus the answer's adapter, if any)."""

    after_tokens: int
    active: str


class CompletionRecord(BaseModel):
    id: str
    created: float
    finished: float
    status: str
    """``complete``, or ``aborted`` when the client went away before the end."""
    model: str
    version: str
    key_id: str
    user: str | None
    user_id: str
    """Who received it (``core/keyed_ids.py``): the only one who may rate it, as pairs and events name them."""
    principal_id: str
    """The API key or account it was given to, keyed like ``user_id``: what the per-principal caps count."""
    metadata: dict[str, str]
    stream: bool
    conversation: list[RecordedMessage]
    choices: list[RecordedChoice]
    """As the model wrote them: a tool call in the model's own format (or the forced JSON), as the trainer sees it."""
    params: dict[str, object]
    prompt_tokens: int
    completion_tokens: int
    weight_changes: list[WeightChange] = []
    ineligible: list[str] = []
    """Why this answer may not be training data (``feedback/eligibility.py``); empty when it may."""
    tools: list[dict[str, Any]] | None = None
    """The request's tools, which the model saw in its prompt."""
    canary_period: str | None = None
    """The canary period it was routed in, when a canary was running and it counts as a vote there
    (``feedback/canary.py``)."""
    response: dict[str, Any] | None = None
    """An answer of ``/v1/responses``: the response object as returned, which ``GET /v1/responses/{id}`` returns
    and ``previous_response_id`` continues from."""

    # Cached: a gesture reads it several times, and the hash serializes every message.
    @cached_property
    def conversation_id(self) -> str:
        return conversation_id(self.user_id, self.conversation)


class CompletionRecords:
    def __init__(self, client: aioredis.Redis, retention_s: float, ids: KeyedIds, index_s: float | None = None):
        self.client = client
        self.retention_s = retention_s
        self.ids = ids
        self.index_s = int(index_s or retention_s)
        """How long the index of a ``user``'s ids lasts: as long as anything naming them (events outlive records)."""

    async def mark_in_flight(self, completion_id: str, owner: str, ttl_s: int) -> None:
        await self.client.set(keys.in_flight_key(completion_id), owner, ex=ttl_s)

    async def save(self, record: CompletionRecord) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.completion_key(record.id), record.model_dump_json(), ex=int(self.retention_s))
        pipe.delete(keys.in_flight_key(record.id))
        pipe.xadd(keys.COMPLETIONS_STREAM, {"id": record.id}, minid=oldest_kept_ms(self.retention_s), approximate=True)
        self._index(pipe, record)
        if record.status == "complete":
            count(pipe, record.version, "served", len(record.choices))
            if record.canary_period is not None:
                count_served(pipe, record.canary_period, record.version, record.user_id, int(self.retention_s))
        await pipe.execute()

    def _index(self, pipe: Pipeline, record: CompletionRecord) -> None:
        """Where an erasure finds a user's records (``feedback/erasure.py``): by user, and by ``user`` under any
        key."""
        pipe.sadd(keys.user_completions_key(record.user_id), record.id)
        pipe.expire(keys.user_completions_key(record.user_id), int(self.retention_s))
        if record.user is not None:
            named = keys.user_name_key(self.ids.user_name_id(record.user))
            pipe.sadd(named, record.user_id)
            pipe.expire(named, self.index_s)

    async def forget_response(self, record: CompletionRecord) -> None:
        """A stored response deleted (``DELETE /v1/responses/{id}``): its response object goes, so it can no longer
        be fetched or continued; the record stays, with its expiry, for the feedback given on it and for an
        erasure to find its conversation."""
        forgotten = record.model_copy(update={"response": None})
        await self.client.set(keys.completion_key(record.id), forgotten.model_dump_json(), keepttl=True, xx=True)

    async def get(self, completion_id: str) -> CompletionRecord | None:
        raw = await self.client.get(keys.completion_key(completion_id))
        return None if raw is None else CompletionRecord.model_validate_json(raw)
