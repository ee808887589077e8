"""Attempts to shape what the model learns, played through the public API (docs/threat-model.md): each must leave
the pairs stream, the export and the canary's counts as they were, while the gestures are still stored and counted.

Most run in process against a real Redis without the engine, on answers recorded as the chat route records them;
the last ones ask the real engine for forced and pinned answers through the session's server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import redis

from core import keys
from core.config import Settings
from feedback.canary import read_period
from feedback.eligibility import CONSTRAINED, NOT_A_TEACHER, PINNED
from feedback.export import export_pairs
from feedback.pairs import read_all
from feedback.records import CompletionRecord, CompletionRecords
from server.auth import key_id
from server.identity.api_keys import ApiKeys, ManagedKey
from tests.factories import completion_record
from tests.helpers import IDS, SECRET_KEY, InProcess, ServerHandle, in_process, run_async

pytestmark = pytest.mark.integration

USER_KEY = "sk-poison-user"
ADMIN_KEY = "sk-poison-admin"

Scenario = Callable[[InProcess], Awaitable[None]]


@pytest.fixture
def run(redis_url: str) -> Callable[..., None]:
    """Run a scenario on an empty Redis; keyword arguments set ``LIMITS`` settings."""
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()

    async def go(scenario: Scenario, limits: dict) -> None:
        settings = Settings(
            _env_file=None,
            redis_url=redis_url,
            api_keys=[USER_KEY],
            admin_key=ADMIN_KEY,
            secret_key=SECRET_KEY,
            limits=limits,
        )
        async with in_process(settings) as app:
            await scenario(app)

    return lambda scenario, **limits: run_async(go(scenario, limits))


async def recorded(app: InProcess, key: str, user: str | None, **fields: object) -> CompletionRecord:
    """An answer with two choices, recorded for ``key`` and ``user`` as the chat route would, with ``fields``."""
    record = completion_record(["A fine answer.", "Another answer."], key_id=key_id(key), user=user, version="v2")
    record = record.model_copy(update=fields)
    await CompletionRecords(app.client, 3600, IDS).save(record)
    return record


async def rate(app: InProcess, key: str, user: str | None, record: CompletionRecord, choice: int, rating: str) -> dict:
    body = {"completion_id": record.id, "choice_index": choice, "rating": rating, "user": user}
    response = await app.http.post("/v1/feedback", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


def training_data(app: InProcess, tmp_path: Path) -> tuple[int, int]:
    """(pairs in the stream, rows in an export)."""
    return len(read_all(app.store)), export_pairs(app.store, tmp_path / "pairs.jsonl")


def last_event(app: InProcess) -> dict:
    (entry,) = app.store.xrevrange(keys.EVENTS_STREAM, count=1)
    return json.loads(entry[1][b"event"])


@pytest.mark.parametrize("reason", [CONSTRAINED, PINNED, NOT_A_TEACHER])
def test_an_ineligible_answer_makes_no_pair_but_its_rating_is_stored_and_counted(
    run: Callable[..., None], tmp_path: Path, reason: str
) -> None:
    """Rate the forced (or pinned, or untaught) answer up and a free one down: the classic forgery."""

    async def scenario(app: InProcess) -> None:
        record = await recorded(app, USER_KEY, "mallory", ineligible=[reason])
        await rate(app, USER_KEY, "mallory", record, 0, "up")
        outcome = await rate(app, USER_KEY, "mallory", record, 1, "down")
        assert outcome["pairs"] == [] and outcome["pairs_ineligible"] == [reason]
        assert last_event(app)["ineligible"] == [reason]
        assert training_data(app, tmp_path) == (0, 0)
        stats = await app.http.get("/v1/feedback/stats", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        (v2,) = [version for version in stats.json()["data"] if version["version"] == "v2"]
        assert (v2["counts"]["up"], v2["counts"]["down"]) == (1, 1)

    run(scenario)


def test_an_app_key_teaches_only_when_an_admin_made_it_to(run: Callable[..., None], tmp_path: Path) -> None:
    async def scenario(app: InProcess) -> None:
        for name, train, made in [("kiosk", False, 0), ("partner", True, 1)]:
            secret = await ApiKeys(app.client).create(ManagedKey(name=name, train=train, created=time.time()))
            record = await recorded(app, secret, "visitor")
            await rate(app, secret, "visitor", record, 0, "up")
            outcome = await rate(app, secret, "visitor", record, 1, "down")
            assert len(outcome["pairs"]) == made
            assert outcome["pairs_ineligible"] == ([] if train else [NOT_A_TEACHER])
        assert training_data(app, tmp_path) == (1, 1)

    run(scenario)


def test_rotating_users_does_not_multiply_what_a_key_teaches(run: Callable[..., None], tmp_path: Path) -> None:
    async def scenario(app: InProcess) -> None:
        made = []
        for user in [f"sock-{i}" for i in range(4)]:
            record = await recorded(app, USER_KEY, user)
            await rate(app, USER_KEY, user, record, 0, "up")
            outcome = await rate(app, USER_KEY, user, record, 1, "down")
            made.append((len(outcome["pairs"]), outcome["pairs_capped"]))
        assert made == [(1, 0), (1, 0), (0, 1), (0, 1)]
        assert training_data(app, tmp_path) == (2, 2)

    run(scenario, key_pairs_per_hour=2)


def test_a_completion_is_one_canary_vote_and_counts_only_in_its_period(run: Callable[..., None]) -> None:
    """Thumbs on every choice of an ``n=2`` answer are one vote; an answer from outside the period (pinned, or
    before the canary ran) is none."""

    async def scenario(app: InProcess) -> None:
        counted = await recorded(app, USER_KEY, "judge", canary_period="v2.7")
        outside = await recorded(app, USER_KEY, "judge-2")

        async def downs() -> tuple[int, int]:
            counts = (await read_period(app.client, "v2.7", ["v2"]))["v2"]
            return counts.served, counts.down

        assert await downs() == (1, 0)
        for choice, rating, expected in [(0, "down", 1), (1, "down", 1), (0, "up", 1), (1, "up", 0), (1, "down", 1)]:
            await rate(app, USER_KEY, "judge", counted, choice, rating)
            assert await downs() == (1, expected), (choice, rating)
        await rate(app, USER_KEY, "judge-2", outside, 0, "down")
        assert await downs() == (1, 1)

    run(scenario)


# ---- through the engine ---------------------------------------------------------------------------------------

FORCED = {
    "a JSON schema": {
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"const": "OK"}}}
    },
    "ignore_eos": {"ignore_eos": True, "max_tokens": 4},
    "a stop string": {"stop": [" "]},
}


def chat(http: httpx.Client, user: str, **body: object) -> dict:
    request = {"model": "chatloop", "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 8, "user": user}
    response = http.post("/v1/chat/completions", json=request | body)
    assert response.status_code == 200, response.text
    return response.json()


def forge(server: ServerHandle, user: str, forced: dict) -> dict:
    """The forgery end to end: a forced answer rated up, its free regeneration rated down."""
    with server.http() as http:
        first = chat(http, user, **forced)
        second = chat(http, user, metadata={"regenerate_of": first["id"]})
        assert http.post("/v1/feedback", json={"completion_id": first["id"], "rating": "up", "user": user}).is_success
        response = http.post("/v1/feedback", json={"completion_id": second["id"], "rating": "down", "user": user})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("forced", FORCED.values(), ids=FORCED.keys())
def test_a_forced_answer_from_the_engine_is_no_training_data(server: ServerHandle, forced: dict) -> None:
    before = len(server.redis.client().xrange(keys.PAIRS_STREAM))
    outcome = forge(server, f"forger-{sorted(forced)[0]}", forced)
    assert outcome["pairs"] == [] and outcome["pairs_ineligible"] == [CONSTRAINED]
    assert len(server.redis.client().xrange(keys.PAIRS_STREAM)) == before


def test_a_pinned_answer_from_the_engine_is_no_training_data(server: ServerHandle) -> None:
    outcome = forge(server, "pinner", {"model": "chatloop@base"})
    assert outcome["pairs"] == [] and outcome["pairs_ineligible"] == [PINNED]
    control = forge(server, "honest", {})
    assert len(control["pairs"]) == 1, "the same gestures on free answers make a pair"
