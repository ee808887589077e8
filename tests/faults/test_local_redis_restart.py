"""Fault: the local redis-server that ``chatloop up`` (or ``serve`` with no REDIS_URL) started is killed with ``-9``.

Promise: the process that started it starts it again on its append-only file, at the same socket, so the loop
gets its store back without anyone restarting chatloop, and nothing written more than AOF's fsync window before
the kill is lost; a server that chatloop stops on purpose stays stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from core.local_redis import start_local_redis

pytestmark = pytest.mark.integration

FSYNC_WINDOW_S = 2.0
BACK_WITHIN_S = 10.0


def answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False


def wait_for(client: redis.Redis, up: bool) -> None:
    deadline = time.monotonic() + BACK_WITHIN_S
    while answers(client) != up:
        assert time.monotonic() < deadline, f"local redis still {'down' if up else 'up'} after {BACK_WITHIN_S} s"
        time.sleep(0.05)


def test_a_killed_local_redis_is_started_again_with_its_data(tmp_path: Path) -> None:
    local = start_local_redis(tmp_path)
    local.keep_running()
    client = redis.Redis.from_url(local.url, decode_responses=True, socket_timeout=1)
    try:
        for kill in range(2):
            client.set(f"before-kill-{kill}", "kept")
            time.sleep(FSYNC_WINDOW_S)
            first = client.info("server")["process_id"]
            local.process.kill()
            wait_for(client, up=False)
            wait_for(client, up=True)
            assert client.info("server")["process_id"] != first
            assert [client.get(f"before-kill-{n}") for n in range(kill + 1)] == ["kept"] * (kill + 1)
    finally:
        local.stop()
    time.sleep(1)
    assert not answers(client), "a local redis stopped on purpose was started again"
