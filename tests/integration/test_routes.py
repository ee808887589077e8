"""The feedback, admin and auth routes in-process, against a real Redis and without the engine: who may call what,
who may rate which answer, how much, and what operators' changes store, each checked in milliseconds.

The app is built as the lifespan would build it, minus the engine (``create_app`` and ``attach_redis``), and driven
through ``httpx.ASGITransport`` in one event loop per test. Answers to rate are written as the chat route writes
them (``CompletionRecords.save``). The engine-backed tests (test_feedback_api.py, test_chat_api.py,
test_versions.py) check the same routes end to end with real answers.

The module has its own redis-server, emptied before each test: a registry change publishes on a channel that every
database of a server shares, which the session's engine-backed server listens to.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from fastapi.routing import APIRoute
from prometheus_client.parser import text_string_to_metric_families

from core import keys
from core.config import Settings
from core.registry import Registry, Version
from core.routing import Routing
from feedback.pairs import Pair, read_all
from feedback.records import CompletionRecords
from server.app import attach_redis, create_app
from server.auth import key_id
from server.unicode_body import UnicodeBodyRoute
from tests.factories import completion_record
from tests.helpers import IDS, SECRET_KEY, fill_to_maxmemory, run_async

pytestmark = pytest.mark.integration

USER_KEY = "sk-routes-user"
OTHER_KEY = "sk-routes-other"
ADMIN_KEY = "sk-routes-admin"
FEEDBACK_PER_MINUTE = 30
PAIRS_PER_HOUR = 50
QUESTION = "Name a fruit."
OTHER_QUESTION = "Name a colour."
ERROR_FIELDS = {"message", "type", "param", "code"}
UNION_TAGS = ("RatingRequest", "ComparisonRequest")


@dataclass
class Api:
    """The app over HTTP, and the Redis behind it."""

    http: httpx.AsyncClient
    records: CompletionRecords
    store: redis.Redis
    """A plain client, to arrange data and read what the routes wrote."""

    async def call(
        self, method: str, path: str, key: str | None = USER_KEY, headers: dict | None = None, **kwargs: object
    ) -> httpx.Response:
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        return await self.http.request(method, path, headers={**auth, **(headers or {})}, **kwargs)

    async def feedback(self, body: object, key: str = USER_KEY) -> httpx.Response:
        return await self.call("POST", "/v1/feedback", key, json=body)

    async def rate(self, user: str, completion_id: str, index: int, rating: str | None) -> dict:
        response = await self.feedback(
            {"completion_id": completion_id, "choice_index": index, "rating": rating, "user": user}
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def compare(self, user: str, chosen: tuple[str, int], rejected: tuple[str, int]) -> httpx.Response:
        pointer = lambda answer: {"completion_id": answer[0], "choice_index": answer[1]}  # noqa: E731
        return await self.feedback({"chosen": pointer(chosen), "rejected": pointer(rejected), "user": user})

    async def answer(self, user: str | None, key: str = USER_KEY, choices: int = 2, question: str = QUESTION) -> str:
        """Record an answer as the chat route does when ``key`` and ``user`` asked ``question``; its id."""
        record = completion_record(
            [f"Answer {i}." for i in range(choices)], question=question, key_id=key_id(key), user=user
        )
        await self.records.save(record)
        return record.id

    def pairs(self) -> list[Pair]:
        return [pair for _, pair in read_all(self.store)]

    @property
    def registry(self) -> Registry:
        return Registry(self.store)


Scenario = Callable[[Api], Awaitable[None]]
Serve = Callable[..., None]
"""Runs a scenario (the ``serve`` fixture)."""


async def _serve(redis_url: str, scenario: Scenario, limits: dict[str, float]) -> None:
    settings = Settings(
        _env_file=None,
        redis_url=redis_url,
        api_keys=[USER_KEY, OTHER_KEY],
        admin_key=ADMIN_KEY,
        secret_key=SECRET_KEY,
        **{"feedback_per_minute": FEEDBACK_PER_MINUTE, "pairs_per_hour": PAIRS_PER_HOUR, **limits},
    )
    app = create_app(settings)
    client = aioredis.from_url(redis_url)
    store = redis.Redis.from_url(redis_url)
    attach_redis(app, client, store)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            await scenario(Api(http, CompletionRecords(client, 3600, IDS), store))
    finally:
        await client.aclose()
        store.close()


@pytest.fixture
def serve(redis_url: str) -> Serve:
    """Run a scenario against an app on an empty Redis; keyword arguments override the limits (feedback, body)."""
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    return lambda scenario, **limits: run_async(_serve(redis_url, scenario, limits))


def error_of(response: httpx.Response, status: int) -> dict:
    """The OpenAI-shaped error of ``response``, which must have ``status``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_FIELDS, body
    return body["error"]


def _candidate(version_id: str, state: str = "candidate") -> Version:
    return Version(
        id=version_id, parent="base", state=state, artifact=str(Path("/nowhere") / version_id), created=time.time()
    )


def admin_routes() -> list[tuple[str, str]]:
    """(method, path) of every route that only the admin key may call, with ``v1`` for a path's version."""
    app = create_app(Settings(_env_file=None))
    found = [
        (method, route.path.replace("{version}", "v1"))
        for route in app.routes
        if isinstance(route, APIRoute) and (route.path.startswith("/v1/admin/") or route.path == "/v1/feedback/stats")
        for method in sorted(route.methods)
    ]
    return sorted(found)


# ---- authentication -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization, code",
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        (USER_KEY, "missing_api_key"),
        (f"Basic {USER_KEY}", "missing_api_key"),
        ("Bearer", "missing_api_key"),
        ("Bearer    ", "missing_api_key"),
        ("Bearer sk-wrong", "invalid_api_key"),
        (f"Bearer {USER_KEY}x", "invalid_api_key"),
    ],
)
def test_a_missing_malformed_or_wrong_key_is_401(serve: Serve, authorization: str | None, code: str):
    routes = [
        ("POST", "/v1/feedback"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("GET", "/v1/feedback/stats"),
        ("GET", "/v1/admin/versions"),
        ("POST", "/v1/admin/rollback"),
    ]

    async def scenario(api: Api) -> None:
        headers = {} if authorization is None else {"Authorization": authorization}
        for method, path in routes:
            response = await api.http.request(method, path, headers=headers, json={})
            error = error_of(response, 401)
            assert (error["type"], error["code"]) == ("authentication_error", code), (path, error)
            assert response.headers["WWW-Authenticate"] == "Bearer", path

    serve(scenario)


def test_a_user_key_is_refused_on_every_admin_route(serve: Serve) -> None:
    routes = admin_routes()
    assert {("POST", "/v1/admin/versions/v1/promote"), ("POST", "/v1/admin/rollback")} <= set(routes)
    assert ("GET", "/v1/feedback/stats") in routes and len(routes) >= 9

    async def scenario(api: Api) -> None:
        api.registry.register(_candidate("v1"), who="trainer", why="gate passed")
        for method, path in routes:
            for key in (USER_KEY, OTHER_KEY):
                error = error_of(await api.call(method, path, key, json={}), 403)
                assert (error["type"], error["code"]) == ("permission_error", "admin_key_required"), path
        assert api.registry.routing() == Routing(), "a refused change must change nothing"
        stats = await api.call("GET", "/v1/feedback/stats", ADMIN_KEY)
        assert stats.status_code == 200 and stats.json()["object"] == "list"

    serve(scenario)


def test_probes_need_no_key_and_without_the_engine_nothing_is_ready(serve: Serve) -> None:
    async def scenario(api: Api) -> None:
        assert (await api.call("GET", "/health", None)).json() == {"status": "ok"}
        metrics = await api.call("GET", "/metrics", None)
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        error = error_of(await api.call("GET", "/ready", None), 503)
        assert (error["type"], error["code"]) == ("service_unavailable", "engine_loading")
        chat = {"model": "chatloop", "messages": [{"role": "user", "content": QUESTION}], "user": "alice"}
        error = error_of(await api.call("POST", "/v1/chat/completions", json=chat), 503)
        assert error["code"] == "engine_loading"

    serve(scenario)


# ---- ownership ------------------------------------------------------------------------------------------


def _without_id(error: dict, completion_id: str) -> dict:
    return {**error, "message": error["message"].replace(completion_id, "ID")}


def test_only_the_key_and_user_that_received_an_answer_may_rate_it(serve: Serve) -> None:
    async def scenario(api: Api) -> None:
        answer = await api.answer("alice")
        unknown_id = f"chatcmpl-{uuid.uuid4().hex}"
        unknown = error_of(await api.feedback({"completion_id": unknown_id, "rating": "up", "user": "alice"}), 404)
        assert (unknown["code"], unknown["param"]) == ("completion_not_found", "completion_id")
        others = [(OTHER_KEY, "alice"), (USER_KEY, "bob"), (USER_KEY, None), (ADMIN_KEY, "alice")]
        for key, user in others:
            rating = await api.feedback({"completion_id": answer, "rating": "up", "user": user}, key)
            assert _without_id(error_of(rating, 404), answer) == _without_id(unknown, unknown_id), (key, user)
        mine = await api.answer("bob")
        foreign = error_of(await api.compare("bob", (mine, 0), (answer, 0)), 404)
        assert foreign["code"] == "completion_not_found" and answer in foreign["message"]
        assert api.pairs() == [] and api.store.keys("chatloop:conversation:*") == []
        await api.rate("alice", answer, 0, "up")

    serve(scenario)


def test_an_answer_in_flight_is_409_for_its_owner_only(serve: Serve) -> None:
    async def scenario(api: Api) -> None:
        answer = await api.answer("alice")
        streaming = f"chatcmpl-{uuid.uuid4().hex}"
        await api.records.mark_in_flight(streaming, IDS.user_id(key_id(USER_KEY), "alice"), ttl_s=60)
        early = error_of(await api.feedback({"completion_id": streaming, "rating": "up", "user": "alice"}), 409)
        assert (early["type"], early["code"]) == ("conflict_error", "completion_in_progress")
        assert early["param"] == "completion_id"
        comparison = error_of(await api.compare("alice", (answer, 0), (streaming, 0)), 409)
        assert comparison["code"] == "completion_in_progress"
        for key, user in ((USER_KEY, "bob"), (OTHER_KEY, "alice")):
            foreign = error_of(await api.feedback({"completion_id": streaming, "rating": "up", "user": user}, key), 404)
            assert foreign["code"] == "completion_not_found"

    serve(scenario)


def test_a_choice_index_out_of_range_is_400_naming_its_param(serve: Serve) -> None:
    async def scenario(api: Api) -> None:
        answer = await api.answer("alice", choices=2)
        other = await api.answer("alice", choices=2)
        rating = error_of(
            await api.feedback({"completion_id": answer, "choice_index": 2, "rating": "up", "user": "alice"}), 400
        )
        assert rating["param"] == "choice_index" and "out of range" in rating["message"]
        chosen = error_of(await api.compare("alice", (answer, 5), (other, 0)), 400)
        rejected = error_of(await api.compare("alice", (answer, 0), (other, 2)), 400)
        assert (chosen["param"], rejected["param"]) == ("chosen.choice_index", "rejected.choice_index")
        assert api.pairs() == []

    serve(scenario)


def test_comparing_answers_to_different_conversations_is_400(serve: Serve) -> None:
    async def scenario(api: Api) -> None:
        fruit = await api.answer("alice")
        colour = await api.answer("alice", question=OTHER_QUESTION)
        error = error_of(await api.compare("alice", (fruit, 0), (colour, 0)), 400)
        assert (error["code"], error["param"]) == ("different_conversations", "rejected")
        same = error_of(await api.compare("alice", (fruit, 1), (fruit, 1)), 400)
        assert same["param"] == "rejected"
        assert api.pairs() == []

    serve(scenario)


# ---- pairs ----------------------------------------------------------------------------------------------


def test_up_and_down_make_one_pair_and_repeating_a_gesture_makes_none(serve: Serve) -> None:
    async def scenario(api: Api) -> None:
        answer = await api.answer("alice")
        assert (await api.rate("alice", answer, 0, "up"))["pairs"] == []
        down = await api.rate("alice", answer, 1, "down")
        assert [(p["chosen"], p["rejected"], p["rule"]) for p in down["pairs"]] == [
            ({"completion_id": answer, "choice_index": 0}, {"completion_id": answer, "choice_index": 1}, "up_vs_down")
        ]
        (pair,) = api.pairs()
        assert (pair.pair_id, pair.user_id) == (down["pairs"][0]["pair_id"], IDS.user_id(key_id(USER_KEY), "alice"))
        assert (pair.chosen.text, pair.rejected.text) == ("Answer 0.", "Answer 1.")
        assert (await api.rate("alice", answer, 1, "down"))["pairs"] == []
        assert (await api.rate("alice", answer, 0, "up"))["pairs"] == []
        assert (await api.rate("alice", answer, 1, None))["pairs"] == []
        assert (await api.rate("alice", answer, 1, "down"))["pairs"] == [], "a pair once emitted is never emitted again"
        assert len(api.pairs()) == 1

    serve(scenario)


def test_a_comparison_makes_its_pair_once(serve: Serve) -> None:
    async def scenario(api: Api) -> None:
        first = await api.answer("alice")
        second = await api.answer("alice")
        response = await api.compare("alice", (second, 1), (first, 0))
        assert response.status_code == 200, response.text
        assert [p["rule"] for p in response.json()["pairs"]] == ["comparison"]
        again = await api.compare("alice", (second, 1), (first, 0))
        assert again.status_code == 200 and again.json()["pairs"] == []
        (pair,) = api.pairs()
        assert (pair.chosen.completion_id, pair.chosen.choice_index) == (second, 1)
        assert (pair.rejected.completion_id, pair.rejected.choice_index) == (first, 0)

    serve(scenario)


# ---- limits ---------------------------------------------------------------------------------------------


def test_the_gesture_limit_is_429_per_user(serve: Serve) -> None:
    limit = 4

    async def scenario(api: Api) -> None:
        alice, bob, namesake = [
            await api.answer(user, key) for key, user in ((USER_KEY, "alice"), (USER_KEY, "bob"), (OTHER_KEY, "alice"))
        ]
        if time.time() % 60 > 55:  # the limit counts per clock minute: start well inside one
            await asyncio.sleep(60.5 - time.time() % 60)
        for rating in [("up", "down")[i % 2] for i in range(limit)]:
            await api.rate("alice", alice, 0, rating)
        response = await api.feedback({"completion_id": alice, "rating": "up", "user": "alice"})
        error = error_of(response, 429)
        assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert (await api.rate("bob", bob, 0, "up"))["type"] == "rating", "another user of the key is not limited"
        other_key = await api.feedback({"completion_id": namesake, "rating": "up", "user": "alice"}, OTHER_KEY)
        assert other_key.status_code == 200, "nor is a user of the same name under another key"

    serve(scenario, feedback_per_minute=limit)


def test_the_pair_quota_caps_pairs_and_reports_the_rest(serve: Serve) -> None:
    async def scenario(api: Api) -> None:
        answer = await api.answer("alice", choices=4)
        for index, rating in enumerate(["up", "up", "down"]):
            assert (await api.rate("alice", answer, index, rating))["pairs_capped"] == 0
        last = await api.rate("alice", answer, 3, "down")
        assert (len(last["pairs"]), last["pairs_capped"]) == (1, 1)
        assert len(api.pairs()) == 3
        assert (await api.rate("alice", answer, 3, None))["pairs"] == []
        other = await api.answer("bob")
        await api.rate("bob", other, 0, "up")
        bob = await api.rate("bob", other, 1, "down")
        assert (len(bob["pairs"]), bob["pairs_capped"]) == (1, 0), "the quota is per user"

    serve(scenario, pairs_per_hour=3)


# ---- the feedback body ----------------------------------------------------------------------------------


BAD_BODIES = {
    "misspelt rating field": ({"completion_id": "X", "rating": "up", "reasn": "short"}, "reasn"),
    "misspelt required field": ({"completion_id": "X", "ratng": "up"}, "rating"),
    "bad rating": ({"completion_id": "X", "rating": "meh"}, "rating"),
    "negative index": ({"completion_id": "X", "choice_index": -1, "rating": "up"}, "choice_index"),
    "comparison without rejected": ({"chosen": {"completion_id": "X"}}, "rejected"),
    "misspelt comparison field": (
        {"chosen": {"completion_id": "X"}, "rejected": {"completion_id": "X"}, "usr": "alice"},
        "usr",
    ),
    "bad pointer": (
        {"chosen": {"completion_id": "X", "choice": 1}, "rejected": {"completion_id": "X"}},
        "chosen.choice",
    ),
    "a list": ([{"completion_id": "X", "rating": "up"}], None),
    "a string": ("up", None),
    "null": (None, None),
}


@pytest.mark.parametrize("case", BAD_BODIES)
def test_a_bad_feedback_body_is_400_naming_the_field_of_the_shape_meant(serve: Serve, case: str):
    body, param = BAD_BODIES[case]

    async def scenario(api: Api) -> None:
        error = error_of(await api.feedback(body), 400)
        assert (error["type"], error["param"]) == ("invalid_request_error", param), error
        assert not any(tag in error["message"] for tag in UNION_TAGS), error

    serve(scenario)


def test_malformed_json_is_400(serve: Serve) -> None:
    async def scenario(api: Api) -> None:
        response = await api.call(
            "POST", "/v1/feedback", content=b'{"rating": ', headers={"content-type": "application/json"}
        )
        error = error_of(response, 400)
        assert error["param"] is None and "JSON" in error["message"]

    serve(scenario)


def test_openapi_describes_both_feedback_shapes(serve: Serve) -> None:
    async def scenario(api: Api) -> None:
        schema = (await api.call("GET", "/openapi.json", None)).json()
        body = schema["paths"]["/v1/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        shapes = {ref["$ref"].rsplit("/", 1)[-1] for ref in body.get("oneOf", body.get("anyOf", []))}
        assert shapes == set(UNION_TAGS), body
        components = schema["components"]["schemas"]
        assert set(components["RatingRequest"]["required"]) == {"completion_id", "rating"}
        assert set(components["ComparisonRequest"]["required"]) == {"chosen", "rejected"}

    serve(scenario)


# ---- bodies that cannot hurt the server -----------------------------------------------------------------


MB = 2**20
CHAT = "/v1/chat/completions"


async def requests_counted(api: Api, endpoint: str, status: str) -> float:
    text = (await api.call("GET", "/metrics", None)).text
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    return sum(
        sample.value
        for sample in samples
        if sample.name == "chatloop_requests_total" and sample.labels == {"endpoint": endpoint, "status": status}
    )


async def _chunked(body: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``body`` sent without a Content-Length, so that only counting what arrives can stop it."""
    for start in range(0, len(body), chunk):
        yield body[start : start + chunk]


def test_a_body_over_the_limit_is_413_before_its_key_is_checked(serve: Serve) -> None:
    async def scenario(api: Api) -> None:
        before = await requests_counted(api, "/v1/feedback", "413")
        for path in ("/v1/feedback", CHAT):
            for key in (None, "sk-wrong", USER_KEY):
                declared = await api.call("POST", path, key, content=b"{}".ljust(MB + 1))
                streamed = await api.call("POST", path, key, content=_chunked(b"{}".ljust(MB + 1)))
                for response in (declared, streamed):
                    error = error_of(response, 413)
                    assert (error["type"], error["code"]) == ("invalid_request_error", "request_too_large"), path
                    assert "1 MB" in error["message"]
        assert await requests_counted(api, "/v1/feedback", "413") == before + 6
        at_the_limit = await api.call("POST", "/v1/feedback", None, content=_chunked(b"{}".ljust(MB)))
        assert error_of(at_the_limit, 401)["code"] == "missing_api_key"
        answer = await api.answer("alice")
        padded = f'{{"completion_id": "{answer}", "rating": "up", "user": "alice"}}'.ljust(MB).encode()
        rated = await api.call("POST", "/v1/feedback", content=padded, headers={"content-type": "application/json"})
        assert rated.status_code == 200, rated.text

    serve(scenario, max_body_mb=1)


NOT_TEXT = {
    "a lone surrogate in a rating's reason": (
        "/v1/feedback",
        b'{"completion_id": "X", "rating": "up", "reason": "\\ud800"}',
        "reason",
    ),
    "a low surrogate in a user": (
        "/v1/feedback",
        b'{"completion_id": "X", "rating": "up", "user": "a\\uDC00"}',
        "user",
    ),
    "a lone surrogate in a pointer": (
        "/v1/feedback",
        b'{"chosen": {"completion_id": "\\ud83d"}, "rejected": {"completion_id": "X"}}',
        "chosen.completion_id",
    ),
    "a lone surrogate in a key": ("/v1/feedback", b'{"completion_id": "X", "rating": "up", "\\ud800": 1}', None),
    "bytes that are not UTF-8 in a reason": (
        "/v1/feedback",
        b'{"completion_id": "X", "rating": "up", "reason": "\xff"}',
        "reason",
    ),
    "an encoded surrogate in a reason": (
        "/v1/feedback",
        b'{"completion_id": "X", "rating": "up", "reason": "\xed\xa0\x80"}',
        "reason",
    ),
    "bytes that are not UTF-8 between fields": ("/v1/feedback", b'{"completion_id": "X",\xff "rating": "up"}', None),
    "a lone surrogate in a message": (
        CHAT,
        b'{"model": "chatloop", "messages": [{"role": "user", "content": "hi \\ud800"}]}',
        "messages.0.content",
    ),
    "a lone surrogate in a text part": (
        CHAT,
        b'{"model": "chatloop", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
        "messages.0.content.0.text",
    ),
    "a lone surrogate in a stop": (CHAT, b'{"model": "chatloop", "messages": [], "stop": ["ok", "\\ud800"]}', "stop.1"),
    "a lone surrogate in metadata": (
        CHAT,
        b'{"model": "chatloop", "messages": [], "metadata": {"k": "\\ud800"}}',
        "metadata.k",
    ),
    "a lone surrogate in a role": (
        CHAT,
        b'{"model": "chatloop", "messages": [{"role": "\\ud800"}]}',
        "messages.0.role",
    ),
}


@pytest.mark.parametrize("case", NOT_TEXT)
def test_text_that_is_not_unicode_is_400_naming_its_parameter(serve: Serve, case: str) -> None:
    path, body, param = NOT_TEXT[case]

    async def scenario(api: Api) -> None:
        response = await api.call("POST", path, content=body, headers={"content-type": "application/json"})
        error = error_of(response, 400)
        assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, None)
        assert "not UTF-8" in error["message"]
        assert api.store.keys("chatloop:*") == []

    serve(scenario)


def test_an_emoji_escaped_as_a_surrogate_pair_is_text(serve: Serve) -> None:
    async def scenario(api: Api) -> None:
        answer = await api.answer("alice")
        body = f'{{"completion_id": "{answer}", "rating": "up", "user": "alice", "reason": "\\ud83d\\ude00"}}'
        response = await api.call("POST", "/v1/feedback", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text
        assert response.json()["rating"]["reason"] == "\U0001f600"

    serve(scenario)


def test_every_route_that_takes_a_body_checks_its_text() -> None:
    app = create_app(Settings(_env_file=None))
    with_body = [route for route in app.routes if isinstance(route, APIRoute) and route.body_field is not None]
    assert {route.path for route in with_body} >= {CHAT, "/v1/feedback", "/v1/admin/versions/{version}/promote"}
    assert [route.path for route in with_body if not isinstance(route, UnicodeBodyRoute)] == []


# ---- admin ----------------------------------------------------------------------------------------------


def test_promote_rollback_and_retire_store_the_routing_and_the_audit(serve: Serve) -> None:
    operator = f"admin:{key_id(ADMIN_KEY)}"

    async def scenario(api: Api) -> None:
        for version_id in ("v1", "v2"):
            api.registry.register(_candidate(version_id), who="trainer", why="gate passed")

        async def act(path: str, body: dict | None = None) -> Routing:
            response = await api.call("POST", f"/v1/admin/{path}", ADMIN_KEY, json=body)
            assert response.status_code == 200, response.text
            assert response.json()["applied"] is None, "no engine: nothing is applied here"
            stored = Routing.model_validate(response.json()["stored"])
            assert stored == api.registry.routing()
            return stored

        def last_audit(version_id: str) -> tuple[str, str, str]:
            entry = api.registry.get(version_id).audit[-1]
            return entry.who, entry.state, entry.why

        canary = await act("versions/v1/promote", {"canary_percent": 10, "reason": "try it"})
        assert (canary.active, canary.canary, canary.canary_percent) == ("base", "v1", 10)
        assert last_audit("v1") == (operator, "canary", "try it")
        active = await act("versions/v1/promote", {"reason": "users like it"})
        assert (active.active, active.canary, active.history) == ("v1", None, ["base"])
        assert last_audit("v1") == (operator, "active", "users like it")
        replaced = await act("versions/v2/promote")
        assert (replaced.active, replaced.history) == ("v2", ["base", "v1"])
        assert last_audit("v1") == (operator, "retired", "by an operator")
        back = await act("rollback", {"reason": "v2 rambles"})
        assert (back.active, back.history) == ("v1", ["base"])
        assert last_audit("v2") == (operator, "retired", "v2 rambles")
        assert last_audit("v1") == (operator, "active", "v2 rambles")
        error = error_of(await api.call("POST", "/v1/admin/versions/v1/retire", ADMIN_KEY), 409)
        assert error["code"] == "invalid_state" and api.registry.routing() == back
        await act("versions/v2/promote", {"canary_percent": 50})
        ended = await act("versions/v2/retire", {"reason": "enough"})
        assert (ended.active, ended.canary, ended.canary_percent) == ("v1", None, 0)
        assert last_audit("v2") == (operator, "retired", "enough")
        assert ended.revision == 6

    serve(scenario)


def test_admin_refusals_change_nothing(serve: Serve) -> None:
    async def scenario(api: Api) -> None:
        api.registry.register(_candidate("v1"), who="trainer", why="gate passed")
        api.registry.register(_candidate("v2", "rejected"), who="trainer", why="gate failed")

        async def refused(method: str, path: str, status: int, body: dict | None = None) -> dict:
            return error_of(await api.call(method, f"/v1/admin/{path}", ADMIN_KEY, json=body), status)

        for path in ("versions/v9/promote", "versions/v9/retire"):
            error = await refused("POST", path, 404)
            assert (error["code"], error["param"]) == ("version_not_found", "version"), path
        assert (await refused("GET", "versions/v9", 404))["code"] == "version_not_found"
        conflicts = [
            ("rollback", None),
            ("versions/v2/promote", None),
            ("versions/base/promote", None),
            ("versions/base/promote", {"canary_percent": 5}),
            ("versions/v2/retire", None),
        ]
        for path, body in conflicts:
            error = await refused("POST", path, 409, body)
            assert (error["type"], error["code"]) == ("conflict_error", "invalid_state"), path
        for percent in (0, 100, 150, -1, "half"):
            error = await refused("POST", "versions/v1/promote", 400, {"canary_percent": percent})
            assert error["param"] == "canary_percent", percent
        assert (await refused("POST", "versions/v1/promote", 400, {"reason": "x" * 501}))["param"] == "reason"
        assert api.registry.routing() == Routing()
        assert [len(api.registry.get(v).audit) for v in ("v1", "v2")] == [1, 1]

    serve(scenario)


def test_a_full_store_refuses_feedback_with_a_retryable_503_and_keeps_what_it_had(serve: Serve) -> None:
    async def scenario(api: Api) -> None:
        completion_id = await api.answer("full")
        await api.rate("full", completion_id, 0, "up")
        fill_to_maxmemory(api.store)
        try:
            response = await api.feedback(
                {"completion_id": completion_id, "choice_index": 1, "rating": "down", "user": "full"}
            )
            assert error_of(response, 503)["code"] == "store_full" and response.headers["Retry-After"] == "30"
        finally:
            api.store.config_set("maxmemory", "0")
        (event,) = [json.loads(fields[b"event"]) for _, fields in api.store.xrange(keys.EVENTS_STREAM)]
        assert event["rating"] == "up", "the refused rating stored nothing, and the earlier one is kept"

    serve(scenario)
