"""Fault: Redis drops the trainer's connections mid-round (``CLIENT KILL``: a Redis restart, a proxy's idle timeout,
a failover).

Promise: the trainer reconnects by itself; its lease keeps being renewed, so no second trainer takes its pairs,
and its round registers its version.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from core.config import Settings, TrainerLoopSettings
from core.registry import Registry, Version
from feedback.pairs import PairConsumer
from tests.factories import seed_pairs
from tests.helpers import RedisHandle
from trainer.context import TrainerContext
from trainer.loop import renewed

pytestmark = pytest.mark.integration

LEASE_S = 1.5


def test_a_round_whose_connections_were_killed_keeps_its_lock_and_registers(
    own_redis: RedisHandle, tmp_path: Path
) -> None:
    seed_pairs(own_redis.client(), 3)
    settings = Settings(_env_file=None, data_dir=tmp_path, trainer=TrainerLoopSettings(lock_lease_s=LEASE_S))
    side = TrainerContext.create(settings, redis.Redis.from_url(own_redis.url)).redis
    entry_ids = [entry for entry, _ in side.consumer.read(count=3)]
    assert side.lock.acquire()
    with renewed(side.lock):
        for _ in range(3):  # killed three times over two leases
            assert own_redis.client().client_kill_filter(_type="normal", skipme=True) >= 1
            time.sleep(LEASE_S * 2 / 3)
        assert side.lock.owned(), "the lease lapsed: the renewal stopped at a dropped connection"
        second = TrainerContext.create(settings, own_redis.client()).redis
        assert not second.lock.acquire(), "a second trainer took the lock"
        version = Version(
            id=side.registry.next_id(), parent="base", state="candidate", artifact=str(tmp_path), created=time.time()
        )
        assert side.commit(version, "passed the gate", entry_ids, [], [])
    assert [stored.id for stored in Registry(own_redis.client()).all()] == [version.id]
    assert PairConsumer(own_redis.client(), "observer").pending() == 0
