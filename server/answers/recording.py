"""The completion record of an answer in Redis, whatever API it came through: a regeneration's link checked and
the answer marked in flight before it is generated, the record written when it ends.

``Generation.finish`` calls ``record`` before the answer's last byte leaves (the last chunk before ``[DONE]``, the
``response.completed`` event, or the JSON body), so a client that rates an answer right after reading it finds the
record in place. Recording never fails an answer: a record that Redis does not take is logged, counted and kept in
memory, and written once Redis answers again, so that an answer that ended during an outage can still be rated (its
in-flight mark, set before the outage, says "in progress" until then). The backlog is bounded; past it the oldest
record is dropped, with an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

from redis.exceptions import RedisError

from feedback.eligibility import ineligible_reasons
from feedback.gestures import Gestures
from feedback.records import CompletionRecord, RecordedChoice, conversation_id
from server import metrics
from server.answers.prepared import PreparedAnswer

log = logging.getLogger(__name__)

IN_FLIGHT_TTL_S = 3600
MAX_WAITING_RECORDS = 10_000
"""Records kept while Redis is away: at a few kB each, tens of MB at most, an outage of minutes at full load."""
WAITING_RETRY_S = 2.0


class AnswerRecorder:
    def __init__(self, gestures: Gestures):
        self.gestures = gestures
        self.records = gestures.records
        self._background: set[asyncio.Task[None]] = set()
        self._waiting: deque[Unwritten] = deque()
        self._retrying: asyncio.Task[None] | None = None

    async def before_generation(self, answer: PreparedAnswer) -> None:
        """Check a regeneration's link and mark the answer in flight. Redis being down fails neither: the chat
        is served, unlinked and unmarked, and the problem logged."""
        asked = answer.recorded
        if not asked.store:
            return
        try:
            if "regenerate_of" in asked.metadata:
                answer.replaces_version = await self.gestures.check_regeneration(
                    answer.caller.key_id,
                    asked.user,
                    asked.metadata["regenerate_of"],
                    asked.metadata.get("regenerate_choice"),
                    conversation_id(answer.owner, asked.conversation),
                )
            await self.records.mark_in_flight(answer.completion_id, answer.owner, IN_FLIGHT_TTL_S)
        except RedisError:
            log.warning("redis unavailable before generation", extra={"completion_id": answer.completion_id})

    def record_in_background(self, answer: PreparedAnswer, *, status: str) -> None:
        """For a request being cancelled, whose task cannot wait for Redis any more."""
        task = asyncio.get_running_loop().create_task(self.record(answer, status=status))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def record(self, answer: PreparedAnswer, *, status: str) -> None:
        if not answer.recorded.store:
            return
        try:
            replaces = answer.replaces_version if status == "complete" else None
            unwritten = Unwritten(_build_record(answer, status), replaces)
            await unwritten.write(self.gestures)
        except RedisError:
            metrics.RECORD_FAILURES.inc()
            log.warning(
                "completion record not written; kept until Redis is back", extra={"completion_id": answer.completion_id}
            )
            self._keep(unwritten)
        except Exception:
            metrics.RECORD_FAILURES.inc()
            log.error("completion record not written", exc_info=True, extra={"completion_id": answer.completion_id})

    def _keep(self, unwritten: Unwritten) -> None:
        if len(self._waiting) >= MAX_WAITING_RECORDS:
            dropped = self._waiting.popleft()
            metrics.RECORDS_DROPPED.inc()
            log.error("completion record dropped: too many wait for Redis", extra={"completion_id": dropped.record.id})
        self._waiting.append(unwritten)
        metrics.RECORDS_WAITING.set(len(self._waiting))
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.get_running_loop().create_task(self._write_waiting())

    async def _write_waiting(self) -> None:
        """Oldest first, until none is left; Redis failing again waits for the next try."""
        while self._waiting:
            await asyncio.sleep(WAITING_RETRY_S)
            try:
                while self._waiting:
                    await self._waiting[0].write(self.gestures)
                    self._waiting.popleft()
                    metrics.RECORDS_WAITING.set(len(self._waiting))
            except RedisError:
                continue
            except Exception:
                dropped = self._waiting.popleft()
                metrics.RECORDS_DROPPED.inc()
                log.error("completion record dropped", exc_info=True, extra={"completion_id": dropped.record.id})
        log.info("completion records kept during an outage are written")


@dataclass
class Unwritten:
    """A record on its way to Redis: saved, then linked to the answer it regenerates, each step done once."""

    record: CompletionRecord
    replaces: str | None
    saved: bool = False

    async def write(self, gestures: Gestures) -> None:
        if not self.saved:
            await gestures.records.save(self.record)
            self.saved = True
        if self.replaces is not None:
            await gestures.link_regeneration(self.record, self.replaces)
            self.replaces = None


def _build_record(answer: PreparedAnswer, status: str) -> CompletionRecord:
    asked, acc, caller = answer.recorded, answer.acc, answer.caller
    params = {**asked.params, "max_tokens": answer.params.max_tokens}
    ineligible = ineligible_reasons(
        params,
        pinned=answer.pinned,
        by_admin=caller.is_admin,
        may_teach=caller.may_teach,
        raw_prompt=asked.raw_prompt,
    )
    return CompletionRecord(
        id=answer.completion_id,
        created=answer.created,
        finished=time.time(),
        status=status,
        model=asked.model,
        version=answer.version,
        key_id=caller.key_id,
        user=asked.user,
        user_id=answer.owner,
        principal_id=answer.principal_id,
        metadata=asked.metadata,
        stream=asked.stream,
        conversation=asked.conversation,
        choices=[
            RecordedChoice(index=i, text="".join(s.text), finish_reason=s.finish_reason, completion_tokens=s.tokens)
            for i, s in enumerate(acc.choices)
        ],
        params=params,
        prompt_tokens=len(answer.prompt_ids),
        completion_tokens=acc.completion_tokens,
        weight_changes=answer.weight_changes,
        ineligible=ineligible,
        tools=asked.tools,
        canary_period=None if ineligible else answer.canary_period,
        response=answer.stored_response,
    )
