"""The completion record of a chat answer in Redis: a regeneration's link checked and the answer marked in flight
before it is generated, the record written when it ends.

``ChatService`` calls ``record`` before the answer's last byte leaves (the last chunk before ``[DONE]``, or the JSON
body), so a client that rates an answer right after reading it finds the record in place. Recording never fails a
chat: a Redis error is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from feedback.eligibility import ineligible_reasons
from feedback.gestures import Gestures
from feedback.records import CompletionRecord, RecordedChoice, RecordedMessage, conversation_id
from server import metrics
from server.chat_api.answer import PreparedChat
from server.chat_api.protocol import ChatCompletionRequest

log = logging.getLogger(__name__)

IN_FLIGHT_TTL_S = 3600
RECORDED_PARAMS = {
    "n",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "response_format",
    "ignore_eos",
}


def recorded_conversation(request: ChatCompletionRequest) -> list[RecordedMessage]:
    return [RecordedMessage(role=m.template_role(), content=m.text()) for m in request.messages]


class ChatRecorder:
    def __init__(self, gestures: Gestures):
        self.gestures = gestures
        self.records = gestures.records
        self._background: set[asyncio.Task[None]] = set()

    async def before_generation(self, chat: PreparedChat) -> None:
        """Check a regeneration's link and mark the answer in flight. Redis being down fails neither: the chat
        is served, unlinked and unmarked, and the problem logged."""
        if chat.request.store is False:
            return
        metadata = chat.request.metadata or {}
        user = chat.request.user
        try:
            if "regenerate_of" in metadata:
                chat.replaces_version = await self.gestures.check_regeneration(
                    chat.caller.key_id,
                    user,
                    metadata["regenerate_of"],
                    metadata.get("regenerate_choice"),
                    conversation_id(chat.owner, recorded_conversation(chat.request)),
                )
            await self.records.mark_in_flight(chat.completion_id, chat.owner, IN_FLIGHT_TTL_S)
        except RedisError:
            log.warning("redis unavailable before generation", extra={"completion_id": chat.completion_id})

    def record_in_background(self, chat: PreparedChat, *, status: str) -> None:
        """For a request being cancelled, whose task cannot wait for Redis any more."""
        task = asyncio.get_running_loop().create_task(self.record(chat, status=status))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def record(self, chat: PreparedChat, *, status: str) -> None:
        if chat.request.store is False:
            return
        try:
            record = _build_record(chat, status)
            await self.records.save(record)
            if chat.replaces_version is not None and status == "complete":
                await self.gestures.link_regeneration(record, chat.replaces_version)
        except Exception:
            metrics.RECORD_FAILURES.inc()
            log.warning("completion record not written", exc_info=True, extra={"completion_id": chat.completion_id})


def _build_record(chat: PreparedChat, status: str) -> CompletionRecord:
    request, acc, caller = chat.request, chat.acc, chat.caller
    params = request.model_dump(include=RECORDED_PARAMS, exclude_none=True, mode="json")
    params["max_tokens"] = chat.params.max_tokens
    ineligible = ineligible_reasons(params, pinned=chat.pinned, by_admin=caller.is_admin, may_teach=caller.may_teach)
    return CompletionRecord(
        id=chat.completion_id,
        created=chat.created,
        finished=time.time(),
        status=status,
        model=request.model,
        version=chat.version,
        key_id=caller.key_id,
        user=request.user,
        user_id=chat.owner,
        principal_id=chat.principal_id,
        metadata=request.metadata or {},
        stream=request.stream,
        conversation=recorded_conversation(request),
        choices=[
            RecordedChoice(index=i, text="".join(s.text), finish_reason=s.finish_reason, completion_tokens=s.tokens)
            for i, s in enumerate(acc.choices)
        ],
        params=params,
        prompt_tokens=len(chat.prompt_ids),
        completion_tokens=acc.completion_tokens,
        weight_changes=chat.weight_changes,
        ineligible=ineligible,
        canary_period=None if ineligible else chat.canary_period,
    )
