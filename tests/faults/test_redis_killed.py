"""Fault: Redis is killed with ``-9`` under feedback load, and started again on its append-only file (``appendfsync
everysec``, as chatloop runs it locally and in deploy/).

Promise: feedback is refused with a retryable 503 while Redis is away, never a 500; the app reconnects by itself
when it is back; and no feedback event it acknowledged is lost, but for those of the last second or two before the
kill (AOF's documented window: an fsync each second, and Redis allows one more when the disk is slow).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from core import keys
from core.config import Settings
from feedback.records import CompletionRecords
from server.auth import key_id
from tests.factories import completion_record
from tests.helpers import IDS, SECRET_KEY, RedisHandle, in_process, run_async

pytestmark = pytest.mark.integration

KEY = "sk-fault-user"
FSYNC_WINDOW_S = 2.0
ANSWERS = 240


def test_acknowledged_feedback_outlives_a_kill_9_but_for_the_fsync_window(own_redis: RedisHandle) -> None:
    settings = Settings(
        _env_file=None, redis_url=own_redis.url, api_keys=[KEY], secret_key=SECRET_KEY, feedback_per_minute=10_000
    )
    acknowledged: list[tuple[float, str]] = []
    statuses: list[int] = []

    async def load() -> float:
        async with in_process(settings) as app:
            records = CompletionRecords(app.client, 3600, IDS)
            ids = []
            for i in range(ANSWERS):
                record = completion_record(["Apple.", "Pear."], key_id=key_id(KEY), user=f"rater-{i}")
                await records.save(record)
                ids.append((record.id, f"rater-{i}"))

            async def rate(completion_id: str, user: str) -> None:
                body = {"completion_id": completion_id, "choice_index": 0, "rating": "up", "user": user}
                response = await app.http.post("/v1/feedback", json=body, headers={"Authorization": f"Bearer {KEY}"})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    acknowledged.append((time.monotonic(), response.json()["id"]))
                else:
                    assert response.status_code == 503 and response.headers["Retry-After"], response.text

            killed_at = 0.0
            for index, (completion_id, user) in enumerate(ids):
                if index == ANSWERS // 4:
                    # Ratings take milliseconds: without a pause every one before the kill would be inside the window.
                    await asyncio.sleep(FSYNC_WINDOW_S + 1)
                if index == ANSWERS // 2:
                    own_redis.server.process.kill()  # SIGKILL: no shutdown, no last fsync
                    own_redis.server.process.wait()
                    killed_at = time.monotonic()
                if index == ANSWERS // 2 + 20:
                    own_redis.restart()
                await rate(completion_id, user)
            return killed_at

    killed_at = run_async(load())
    assert 503 in statuses and set(statuses) <= {200, 503}, "the outage was seen, and only as a retryable 503"
    assert statuses[-ANSWERS // 4 :] == [200] * (ANSWERS // 4), "the app did not reconnect by itself"
    stored = {json.loads(fields["event"])["id"] for _, fields in own_redis.client().xrange(keys.EVENTS_STREAM)}
    outside_the_window = [event for at, event in acknowledged if at < killed_at - FSYNC_WINDOW_S]
    assert len(outside_the_window) >= ANSWERS // 4
    lost = [event for event in outside_the_window if event not in stored]
    assert lost == [], f"{len(lost)} acknowledged events older than the fsync window were lost"
