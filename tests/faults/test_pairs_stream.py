"""Fault: the pairs stream, or the trainer's consumer group on it, disappears under a running trainer (a Redis
restarted without its data, a ``FLUSHDB``, a failover to a replica that lagged, an ``XGROUP DESTROY``).

Promise: the trainer recreates what it needs and trains on pairs stored after that, with a warning; it does not
read every stored pair again as new.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import redis

from core import keys
from feedback.pairs import PairConsumer
from tests.factories import short_over_long_pair
from tests.helpers import RedisHandle

pytestmark = pytest.mark.integration

FAULTS: dict[str, Callable[[redis.Redis], object]] = {
    "group destroyed": lambda client: client.xgroup_destroy(keys.PAIRS_STREAM, keys.TRAINER_GROUP),
    "stream deleted": lambda client: client.delete(keys.PAIRS_STREAM),
    "database flushed": lambda client: client.flushdb(),
}


def store_pairs(client: redis.Redis, first: int, count: int) -> list[str]:
    """``count`` new pairs in the stream, as the feedback service stores them; their ids."""
    pairs = [short_over_long_pair(first + i) for i in range(count)]
    for pair in pairs:
        client.xadd(keys.PAIRS_STREAM, {"pair": pair.model_dump_json()})
    return [pair.pair_id for pair in pairs]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_trainer_recreates_its_group_and_reads_the_pairs_stored_after(
    own_redis: RedisHandle, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(own_redis.url)  # replies in bytes, as the trainer's does
    trainer = PairConsumer(client, "trainer", claim_idle_s=0)
    read_before = store_pairs(client, 0, 3)
    assert trainer.waiting() == 3
    trainer.ack([entry for entry, _ in trainer.read(count=10)])
    store_pairs(client, 3, 2)  # stored, never read: the fault leaves their place unknown

    FAULTS[fault](client)
    with caplog.at_level(logging.WARNING, logger="feedback.pairs"):
        assert trainer.waiting() == 0, "after the fault, no stored pair counts as new"
    assert "the pairs' consumer group was gone" in caplog.text

    stored_after = store_pairs(client, 5, 4)
    assert trainer.waiting() == 4
    read = [pair.pair_id for _, pair in trainer.read(count=10)]
    assert read == stored_after and not set(read) & set(read_before)


def test_a_consumer_reading_when_the_group_is_gone_gets_the_new_pairs(own_redis: RedisHandle) -> None:
    """The loop may ask for pairs (``XREADGROUP``, ``XAUTOCLAIM``) before it asks how many wait (``XINFO``)."""
    client = own_redis.client()
    trainer = PairConsumer(client, "trainer", claim_idle_s=0)
    FAULTS["group destroyed"](client)
    assert trainer.read(count=10) == [] and trainer.pending() == 0
    stored = store_pairs(client, 0, 2)
    assert [pair.pair_id for _, pair in trainer.read(count=10)] == stored
