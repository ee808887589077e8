"""Gestures racing on one conversation, against a real Redis: each is decided from a state another may change."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from core import keys
from core.config import Settings
from core.errors import InvalidInput
from feedback.access import AnswerAccess, Giver
from feedback.commit import REVISION, Commands, ConditionalCommit
from feedback.gestures import Gestures
from feedback.pairs import read_all
from feedback.records import CompletionRecords
from tests.factories import completion_record
from tests.helpers import IDS, RedisHandle, run_async

pytestmark = pytest.mark.integration

RACER = Giver("key", "racer", pairs_per_hour=1000, may_teach=True)


def test_racing_ratings_count_once_and_pair_once(redis_server: RedisHandle) -> None:
    """Every rating reads the conversation before any writes it (asyncio interleaves them at each await):
    all but the first must see their state changed, and decide again."""
    version = f"race-{uuid.uuid4().hex[:8]}"
    record = completion_record(["Apple.", "A fruit is a plant's seed-bearing part."], user="racer", version=version)

    async def race() -> None:
        client = aioredis.from_url(redis_server.url)
        settings = Settings(_env_file=None, feedback_per_minute=100)
        records = CompletionRecords(client, 3600, IDS)
        await records.save(record)
        gestures = Gestures(client, records, AnswerAccess(client, settings, IDS), settings)
        ratings = [(i % 2, ("up", "down")[i % 2]) for i in range(8)]
        await asyncio.gather(*(gestures.rate(RACER, record.id, i, r, None) for i, r in ratings))
        await client.aclose()

    run_async(race())
    counts = redis_server.client().hgetall(keys.version_stats_key(version))
    assert (counts.get("up"), counts.get("down")) == ("1", "1")
    pairs = [p for _, p in read_all(redis_server.client()) if p.chosen.completion_id == record.id]
    assert [(p.chosen.choice_index, p.rejected.choice_index, p.rule) for p in pairs] == [(0, 1, "up_vs_down")]


def test_conditional_commit_writes_nothing_once_the_state_changed(redis_server: RedisHandle) -> None:
    conversation, quota, target = (f"test:{name}:{uuid.uuid4().hex}" for name in ("conversation", "quota", "target"))

    async def attempts() -> tuple[bool, bool]:
        client = aioredis.from_url(redis_server.url)
        commit = ConditionalCommit(client)
        writes = Commands()
        writes.incrby(target, 1)
        await client.hincrby(conversation, REVISION, 1)  # another gesture wrote since revision "" was read
        stale = await commit(conversation, "", {quota: ""}, writes)
        current = await commit(conversation, "1", {quota: ""}, writes)
        await client.aclose()
        return stale, current

    assert run_async(attempts()) == (False, True)
    assert redis_server.client().get(target) == "1"


def test_a_commit_of_ten_thousand_fields_applies_them_all(redis_server: RedisHandle) -> None:
    """A long conversation's state outgrows what one Lua call unpacks (about 8,000 values): its commit must still
    apply, or every later rating in it would fail."""
    conversation, members = (f"test:{name}:{uuid.uuid4().hex}" for name in ("conversation", "members"))

    async def commit() -> bool:
        client = aioredis.from_url(redis_server.url)
        writes = Commands()
        writes.hset(conversation, {f"pair:{i}": "1" for i in range(10_000)})
        writes.sadd(members, *(str(i) for i in range(10_000)))
        applied = await ConditionalCommit(client)(conversation, "", {}, writes)
        await client.aclose()
        return applied

    assert run_async(commit())
    client = redis_server.client()
    assert (client.hlen(conversation), client.scard(members)) == (10_000, 10_000)


@pytest.mark.parametrize("choice", ["\u00b2", "\u0663", "-1", "1.0", " 1", ""])
def test_a_regeneration_names_its_choice_in_ascii_digits(redis_server: RedisHandle, choice: str) -> None:
    """``str.isdigit`` also accepts a superscript two, which ``int`` refuses (a 500 once), and ``int`` reads the
    Arabic-Indic three as 3: both are refused as the bad values they are."""
    record = completion_record(["Apple.", "Pear."], user="regenerator")

    async def check() -> None:
        client = aioredis.from_url(redis_server.url)
        settings = Settings(_env_file=None)
        records = CompletionRecords(client, 3600, IDS)
        await records.save(record)
        gestures = Gestures(client, records, AnswerAccess(client, settings, IDS), settings)
        try:
            assert await gestures.check_regeneration("key", "regenerator", record.id, "1", record.conversation_id)
            with pytest.raises(InvalidInput) as caught:
                await gestures.check_regeneration("key", "regenerator", record.id, choice, record.conversation_id)
            assert caught.value.param == "metadata.regenerate_choice"
        finally:
            await client.aclose()

    run_async(check())
