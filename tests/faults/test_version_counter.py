"""Faults around a round's version id: a Redis that lost its data restarts the version counter, and a Redis that is
full takes no more writes.

Promises: a new version never takes the id (and folder) of one on disk; a full Redis stops a round before its
training, not after it (when the version could not be registered and the work would be repeated for nothing).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from core.config import Settings
from core.registry import Registry
from tests.factories import seed_pairs
from tests.helpers import RedisHandle, fill_to_maxmemory
from trainer.artifacts import highest_version
from trainer.context import TrainerContext
from trainer.round import run_round

pytestmark = pytest.mark.integration


def test_a_counter_restarted_by_lost_data_numbers_past_the_versions_on_disk(
    own_redis: RedisHandle, tmp_path: Path
) -> None:
    for name in ("v1", "v2", "v7", ".v8.partial", "vx"):
        (tmp_path / name).mkdir()
    client = own_redis.client()
    registry = Registry(client)
    assert [registry.next_id(), registry.next_id()] == ["v1", "v2"]
    client.flushdb()  # the counter is gone; the folders are not
    assert highest_version(tmp_path) == 7
    assert registry.next_id(above=highest_version(tmp_path)) == "v8"
    assert registry.next_id(above=highest_version(tmp_path)) == "v9", "the counter moved past the folders"


def test_a_full_redis_stops_a_round_before_it_trains(own_redis: RedisHandle, tmp_path: Path) -> None:
    seed_pairs(own_redis.client(), 4)
    client = redis.Redis.from_url(own_redis.url)  # replies in bytes, as the trainer's does
    trainer = TrainerContext.create(Settings(_env_file=None, data_dir=tmp_path), client)
    fill_to_maxmemory(client)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        run_round(trainer)  # raised while reading its inputs: no model was loaded
    assert not (tmp_path / "versions").exists() or not any((tmp_path / "versions").iterdir())
