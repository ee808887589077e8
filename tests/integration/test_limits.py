"""The chat limits against a real Redis, without the engine: the limiter itself (``server/limits.py``) as replicas
share it, and the chat route's 429s, 503s and headers with a stand-in for the engine's chat service, whose
requests a test holds open to keep them in flight.

The module has its own redis-server, emptied before each test. The engine-backed check that a real answer carries
the headers is in test_chat_api.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from core import keys
from core.config import Settings
from feedback.pairs import read_all
from feedback.records import CompletionRecords
from server.app import attach_redis, create_app
from server.auth import Caller, Limits, key_id
from server.chat_api.protocol import AssistantMessage, ChatCompletion, ChatCompletionRequest, Choice, Usage
from server.dependencies import get_chat_service
from server.errors import ApiError
from server.identity.api_keys import ApiKeys, ManagedKey
from server.limits import ChatLimiter, reset_duration
from tests.factories import completion_record
from tests.helpers import IDS, SECRET_KEY, run_async

pytestmark = pytest.mark.integration

USER_KEY = "sk-limits-user"
OTHER_KEY = "sk-limits-other"
ADMIN_KEY = "sk-limits-admin"
CHAT = {"model": "chatloop", "messages": [{"role": "user", "content": "Hi"}]}
RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")


@pytest.fixture
def empty_redis(redis_url: str) -> str:
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    return redis_url


def settings(redis_url: str, **limits: object) -> Settings:
    max_num_seqs = limits.pop("max_num_seqs", 64)
    return Settings(
        _env_file=None,
        redis_url=redis_url,
        api_keys=[USER_KEY, OTHER_KEY],
        admin_key=ADMIN_KEY,
        secret_key=SECRET_KEY,
        max_num_seqs=max_num_seqs,
        limits=limits,
    )


def caller(principal: str = "key-a", per_minute: int = 100, concurrent: int = 100) -> Caller:
    return Caller(key_id=principal, is_admin=False, limits=Limits(per_minute, concurrent, 1000), may_teach=True)


def seconds_of(duration: str) -> float:
    """The seconds a ``x-ratelimit-reset-requests`` value says (``12ms``, ``1.5s``, ``1m0s``)."""
    if duration.endswith("ms"):
        return int(duration.removesuffix("ms")) / 1000
    minutes, _, seconds = duration.removesuffix("s").rpartition("m")
    return 60 * int(minutes or 0) + float(seconds)


async def refused(limiter: ChatLimiter, who: Caller, status: int) -> ApiError:
    with pytest.raises(ApiError) as refusal:
        await limiter.admit(who)
    assert refusal.value.status == status
    return refusal.value


async def until_freed(client: aioredis.Redis, principal: str) -> None:
    """Until the released slots' background removals have reached Redis."""
    deadline = time.monotonic() + 5
    while await client.zcard(keys.chat_in_flight_key(principal)) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def until_freed_to(client: aioredis.Redis, principal: str, count: int) -> None:
    deadline = time.monotonic() + 5
    while await client.zcard(keys.chat_in_flight_key(principal)) > count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def run_with_limiter(redis_url: str, scenario: Callable[..., Awaitable[None]], **limits: object) -> None:
    """Run ``scenario(limiter, client)`` against a limiter on ``redis_url`` in a fresh event loop."""

    async def main() -> None:
        client = aioredis.from_url(redis_url)
        try:
            await scenario(ChatLimiter(client, settings(redis_url, **limits)), client)
        finally:
            await client.aclose()

    run_async(main())


# ---- the limiter --------------------------------------------------------------------------------------------


def test_reset_is_written_as_openai_writes_it():
    assert [reset_duration(ms) for ms in (12, 999, 1000, 1500, 59_999, 60_000, 360_000)] == [
        "12ms",
        "999ms",
        "1s",
        "1.5s",
        "59.999s",
        "1m0s",
        "6m0s",
    ]


def test_per_minute_limit_counts_down_then_refuses_with_the_time_to_wait(empty_redis: str):
    async def scenario(limiter: ChatLimiter, _: aioredis.Redis) -> None:
        who = caller(per_minute=3)
        admitted = [await limiter.admit(who) for _ in range(3)]
        assert [a.headers["x-ratelimit-remaining-requests"] for a in admitted] == ["2", "1", "0"]
        assert all(a.headers["x-ratelimit-limit-requests"] == "3" for a in admitted)
        # The bucket refills one request every 20 s: three spent, it is full again in a minute.
        assert 59 <= seconds_of(admitted[-1].headers["x-ratelimit-reset-requests"]) <= 60
        error = await refused(limiter, who, 429)
        assert error.code == "rate_limit_exceeded"
        assert 19 <= int(error.headers["Retry-After"]) <= 20
        assert error.headers["x-ratelimit-remaining-requests"] == "0"
        # Another principal has its own bucket.
        assert (await limiter.admit(caller("key-b", per_minute=3))).headers["x-ratelimit-remaining-requests"] == "2"

    run_with_limiter(empty_redis, scenario)


def test_replicas_share_the_limits(empty_redis: str):
    async def scenario(limiter: ChatLimiter, client: aioredis.Redis) -> None:
        replica = ChatLimiter(client, settings(empty_redis))
        who = caller(per_minute=2, concurrent=1)
        held = await limiter.admit(who)
        assert (await refused(replica, who, 429)).code == "concurrency_limit_exceeded"
        held.release()
        await until_freed(client, who.key_id)
        await replica.admit(who)
        assert (await refused(limiter, who, 429)).code == "rate_limit_exceeded"

    run_with_limiter(empty_redis, scenario)


def test_concurrency_limit_refuses_until_a_request_ends_and_a_refusal_spends_nothing(empty_redis: str):
    async def scenario(limiter: ChatLimiter, client: aioredis.Redis) -> None:
        who = caller(per_minute=10, concurrent=2)
        first, second = await limiter.admit(who), await limiter.admit(who)
        error = await refused(limiter, who, 429)
        assert error.code == "concurrency_limit_exceeded" and error.headers["Retry-After"] == "1"
        assert error.headers["x-ratelimit-remaining-requests"] == "8", "the refused request was counted"
        first.release()
        first.release()  # a second release frees nothing more
        await until_freed_to(client, who.key_id, 1)
        third = await limiter.admit(who)
        assert third.headers["x-ratelimit-remaining-requests"] == "7"
        assert await refused(limiter, who, 429)
        for admission in (second, third):
            admission.release()
        await until_freed(client, who.key_id)
        assert limiter.active == 0

    run_with_limiter(empty_redis, scenario)


def test_slots_of_a_dead_server_expire_and_live_ones_are_renewed(empty_redis: str):
    async def scenario(_: ChatLimiter, client: aioredis.Redis) -> None:
        limiter = ChatLimiter(client, settings(empty_redis), lease_s=0.3)
        who = caller(concurrent=1)
        in_flight = keys.chat_in_flight_key(who.key_id)
        seconds, micros = await client.time()
        now_ms = seconds * 1000 + micros // 1000
        # A server that died mid-request left its slot, whose lease ran out a moment ago.
        await client.zadd(in_flight, {"request-of-a-dead-server": now_ms - 1})
        held = await limiter.admit(who)
        assert await client.zscore(in_flight, "request-of-a-dead-server") is None
        # Held past two leases, the live request keeps its slot: this server renews it.
        await asyncio.sleep(0.8)
        assert (await refused(ChatLimiter(client, settings(empty_redis)), who, 429)).code == (
            "concurrency_limit_exceeded"
        )
        held.release()
        await until_freed(client, who.key_id)
        await limiter.admit(who)

    run_with_limiter(empty_redis, scenario)


def test_this_servers_queue_is_bounded_with_limits_on_or_off(empty_redis: str):
    for enabled in (True, False):

        async def scenario(limiter: ChatLimiter, _: aioredis.Redis, enabled: bool = enabled) -> None:
            held = [await limiter.admit(caller()) for _ in range(3)]  # the engine's batch of 2, and 1 queued
            assert all(bool(admission.headers) == enabled for admission in held)
            error = await refused(limiter, caller("key-b"), 503)
            assert (error.code, error.headers) == ("server_busy", {"Retry-After": "1"})
            held[0].release()
            await limiter.admit(caller("key-b"))
            await refused(limiter, caller("key-b"), 503)

        run_with_limiter(empty_redis, scenario, max_num_seqs=2, max_queued=1, enabled=enabled)


def test_redis_away_admits_without_limits():
    async def scenario() -> None:
        client = aioredis.from_url("unix:///nonexistent/redis.sock")
        limiter = ChatLimiter(client, settings("unix:///nonexistent/redis.sock"))
        admitted = [await limiter.admit(caller(per_minute=1, concurrent=1)) for _ in range(2)]
        assert [admission.headers for admission in admitted] == [{}, {}]
        assert limiter.active == 2, "this server's queue bound still counts them"
        await client.aclose()

    run_async(scenario())


# ---- the chat route -------------------------------------------------------------------------------------


@dataclass
class StandInChat:
    """Stands in for the engine's chat service: answers once ``go`` is set (at once unless a test clears it),
    and counts the requests that reached it; ``fail`` makes an answer fail before or during its stream."""

    go: asyncio.Event = field(default_factory=asyncio.Event)
    started: int = 0
    fail: str | None = None
    """None, ``before`` (as the engine refusing a request) or ``during`` (a stream cut short)."""

    def __post_init__(self) -> None:
        self.go.set()

    def prepare(self, body: ChatCompletionRequest, _: Caller) -> ChatCompletionRequest:
        return body

    async def complete(self, body: ChatCompletionRequest) -> ChatCompletion:
        self._start()
        await self.go.wait()
        return ChatCompletion(
            id="chatcmpl-standin",
            created=0,
            model=body.model,
            system_fingerprint="base",
            choices=[Choice(index=0, message=AssistantMessage(content="Hello."), finish_reason="stop")],
            usage=Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
        )

    async def stream(self, _: ChatCompletionRequest) -> AsyncIterator[str]:
        self._start()
        return self._chunks()

    def _start(self) -> None:
        self.started += 1
        if self.fail == "before":
            raise ApiError(400, "The engine refused this request.")

    async def _chunks(self) -> AsyncIterator[str]:
        yield '{"choices": []}'
        await self.go.wait()
        if self.fail == "during":
            raise RuntimeError("the stream broke")
        yield "[DONE]"


@dataclass
class ChatApi:
    http: httpx.AsyncClient
    chat: StandInChat
    client: aioredis.Redis

    async def post(self, key: str = USER_KEY, stream: bool = False) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return await self.http.post("/v1/chat/completions", headers=headers, json={**CHAT, "stream": stream})

    async def in_flight(self, count: int) -> None:
        """Until ``count`` requests have reached the chat service."""
        deadline = time.monotonic() + 5
        while self.chat.started < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert self.chat.started == count


def serve_chat(redis_url: str, scenario: Callable[[ChatApi], Awaitable[None]], **limits: object) -> None:
    async def main() -> None:
        app = create_app(settings(redis_url, **limits))
        client = aioredis.from_url(redis_url)
        store = redis.Redis.from_url(redis_url)
        attach_redis(app, client, store)
        chat = StandInChat()
        app.dependency_overrides[get_chat_service] = lambda: chat
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
                await scenario(ChatApi(http, chat, client))
        finally:
            await client.aclose()
            store.close()

    run_async(main())


def openai_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    return error


def test_answers_carry_the_rate_headers_and_a_request_over_the_limit_gets_429(empty_redis: str):
    async def scenario(api: ChatApi) -> None:
        plain, streamed = await api.post(), await api.post(stream=True)
        assert (plain.status_code, streamed.status_code) == (200, 200)
        assert plain.json()["choices"][0]["message"]["content"] == "Hello."
        assert "data: [DONE]" in streamed.text
        assert [r.headers["x-ratelimit-remaining-requests"] for r in (plain, streamed)] == ["1", "0"]
        assert all(r.headers["x-ratelimit-limit-requests"] == "2" for r in (plain, streamed))
        over = await api.post(stream=True)
        assert openai_error(over, 429, "rate_limit_exceeded")["type"] == "rate_limit_error"
        assert over.headers["Retry-After"] == "30"
        assert [over.headers[name] for name in RATE_HEADERS[:2]] == ["2", "0"]
        assert seconds_of(over.headers["x-ratelimit-reset-requests"]) > 59
        assert api.chat.started == 2, "a refused request reached the engine"
        assert (await api.post(OTHER_KEY)).status_code == 200, "another key shares the first one's limit"

    serve_chat(empty_redis, scenario, key_chat_per_minute=2)


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_beyond_the_concurrency_limit_gets_429_until_one_ends(empty_redis: str, stream: bool):
    async def scenario(api: ChatApi) -> None:
        api.chat.go.clear()
        first = asyncio.create_task(api.post(stream=stream))
        await api.in_flight(1)
        second = await api.post(stream=stream)
        assert openai_error(second, 429, "concurrency_limit_exceeded")["type"] == "rate_limit_error"
        assert second.headers["Retry-After"] == "1" and second.headers["x-ratelimit-remaining-requests"] == "599"
        api.chat.go.set()
        assert (await first).status_code == 200
        await until_freed(api.client, key_id(USER_KEY))
        assert (await api.post(stream=stream)).status_code == 200
        assert api.chat.started == 2

    serve_chat(empty_redis, scenario, key_max_concurrent=1)


@pytest.mark.parametrize("fail, stream", [("before", False), ("before", True), ("during", True)])
def test_a_failed_answer_frees_its_slot(empty_redis: str, fail: str, stream: bool):
    async def scenario(api: ChatApi) -> None:
        api.chat.fail = fail
        if fail == "during":
            with pytest.raises(RuntimeError):
                await api.post(stream=stream)
        else:
            openai_error(await api.post(stream=stream), 400, None)
        await until_freed(api.client, key_id(USER_KEY))
        api.chat.fail = None
        assert (await api.post(stream=stream)).status_code == 200

    serve_chat(empty_redis, scenario, key_max_concurrent=1)


def test_a_full_server_answers_503_at_once(empty_redis: str):
    async def scenario(api: ChatApi) -> None:
        api.chat.go.clear()
        held = [asyncio.create_task(api.post(key)) for key in (USER_KEY, OTHER_KEY)]
        await api.in_flight(2)
        busy = await api.post(ADMIN_KEY)
        assert openai_error(busy, 503, "server_busy")["type"] == "service_unavailable"
        assert busy.headers["Retry-After"] == "1"
        assert api.chat.started == 2
        api.chat.go.set()
        assert [(await task).status_code for task in held] == [200, 200]
        assert (await api.post(ADMIN_KEY)).status_code == 200

    serve_chat(empty_redis, scenario, max_num_seqs=1, max_queued=1)


def test_a_managed_key_has_its_own_limits(empty_redis: str):
    async def scenario(api: ChatApi) -> None:
        secret = await ApiKeys(api.client).create(ManagedKey(name="batch", chat_per_minute=1, created=time.time()))
        answered = await api.post(secret)
        assert answered.status_code == 200 and answered.headers["x-ratelimit-limit-requests"] == "1"
        openai_error(await api.post(secret), 429, "rate_limit_exceeded")
        assert (await api.post()).headers["x-ratelimit-limit-requests"] == "600"

    serve_chat(empty_redis, scenario)


# ---- the pair quota of a key ----------------------------------------------------------------------------


def test_a_keys_pair_quota_caps_pairs_across_its_users(empty_redis: str):
    async def scenario(api: ChatApi) -> None:
        secret = await ApiKeys(api.client).create(
            ManagedKey(name="panel", pairs_per_hour=2, train=True, created=time.time())
        )
        records = CompletionRecords(api.client, 3600, IDS)

        async def pairs_of(user: str) -> list[int]:
            """Rate two answers of ``user`` up and down: [pairs made, pairs capped] by the second rating."""
            record = completion_record(["Apple.", "Pear."], key_id=key_id(secret), user=user)
            await records.save(record)
            replies = []
            for index, rating in enumerate(["up", "down"]):
                body = {"completion_id": record.id, "choice_index": index, "rating": rating, "user": user}
                headers = {"Authorization": f"Bearer {secret}"}
                response = await api.http.post("/v1/feedback", headers=headers, json=body)
                assert response.status_code == 200, response.text
                replies.append(response.json())
            return [len(replies[-1]["pairs"]), replies[-1]["pairs_capped"]]

        assert [await pairs_of(user) for user in ("alice", "bob", "carol")] == [[1, 0], [1, 0], [0, 1]]
        with redis.Redis.from_url(empty_redis) as store:
            assert len(read_all(store)) == 2

    serve_chat(empty_redis, scenario)
