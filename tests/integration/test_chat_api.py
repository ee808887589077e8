"""The chat API as the official OpenAI SDK sees it, against a real server, engine and Redis."""

from __future__ import annotations

import itertools
import json
import socket
import time

import httpx
import openai
import pytest
import redis.asyncio as aioredis
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from core import keys
from server.auth import key_id
from server.identity.api_keys import ApiKeys, ManagedKey
from tests.factories import WEATHER_TOOL
from tests.helpers import ServerHandle, run_async

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
LONG_TASK = [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}]


@pytest.fixture(scope="module")
def client(server: ServerHandle) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key=server.user_key, max_retries=0, timeout=120)


def scrape(server: ServerHandle) -> list[Sample]:
    """Every sample on /metrics (vLLM's own beside ours), parsed by prometheus_client."""
    text = httpx.get(f"{server.base_url}/metrics").text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose label sets include ``labels``."""
    return sum(sample.value for sample in samples if sample.name == name and labels.items() <= sample.labels.items())


def metric(server: ServerHandle, name: str) -> float:
    """A metric's value now, summed over its label sets."""
    return total(scrape(server), name)


def record(server: ServerHandle, completion_id: str) -> dict:
    raw = server.redis.client().get(keys.completion_key(completion_id))
    assert raw is not None, f"no record of {completion_id}"
    return json.loads(raw)


def test_plain_answer(client: OpenAI) -> None:
    answer = client.chat.completions.create(model="chatloop", messages=QUESTION, max_tokens=40, temperature=0)
    assert answer.id.startswith("chatcmpl-")
    assert answer.system_fingerprint == "base"
    assert answer.model == "chatloop"
    assert "Paris" in answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop"
    usage = answer.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_stream_matches_plain_answer_and_reports_usage(client: OpenAI) -> None:
    kwargs = dict(model="chatloop", messages=QUESTION, max_tokens=40, temperature=0)
    plain = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 3, "the answer should arrive in several pieces"
    assert "".join(c.choices[0].delta.content for c in content_chunks) == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_stream_without_usage_has_no_usage_chunk(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="chatloop", messages=QUESTION, max_tokens=8, stream=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


def test_n_choices(client: OpenAI) -> None:
    answer = client.chat.completions.create(model="chatloop", messages=QUESTION, max_tokens=20, n=2, seed=3)
    assert [choice.index for choice in answer.choices] == [0, 1]
    assert all(choice.message.content for choice in answer.choices)
    assert answer.usage.completion_tokens > 0


def test_stream_n_choices_interleave(client: OpenAI) -> None:
    """The choices are generated side by side: before either is finished, one goes on after the other has begun."""
    chunks = list(client.chat.completions.create(model="chatloop", messages=QUESTION, max_tokens=10, n=2, stream=True))
    choices = [c.choices[0] for c in chunks if c.choices]
    finished = {choice.index for choice in choices if choice.finish_reason}
    assert finished == {0, 1}
    first_finish = next(i for i, choice in enumerate(choices) if choice.finish_reason)
    order = [choice.index for choice in choices[:first_finish] if choice.delta.content]
    switches = sum(a != b for a, b in itertools.pairwise(order))
    assert set(order) == {0, 1} and switches >= 2, f"one choice after the other, not interleaved: {order}"


def test_stop_sequence_ends_answer_before_it(client: OpenAI) -> None:
    kwargs = dict(model="chatloop", messages=LONG_TASK, max_tokens=30, temperature=0)
    free = client.chat.completions.create(**kwargs).choices[0].message.content
    words = free.split()
    assert len(words) > 6, free
    stop_word = words[len(words) // 2]  # a word the model wrote mid-answer
    stopped = client.chat.completions.create(**kwargs, stop=[stop_word, "nonexistent"]).choices[0]
    assert stopped.finish_reason == "stop"
    assert free.startswith(stopped.message.content)
    assert len(stopped.message.content) < free.index(stop_word) + len(stop_word)


def test_max_tokens_ends_with_length(client: OpenAI) -> None:
    for limit in ({"max_tokens": 5}, {"max_completion_tokens": 5}):
        answer = client.chat.completions.create(model="chatloop", messages=LONG_TASK, **limit)
        assert answer.choices[0].finish_reason == "length"
        assert answer.usage.completion_tokens == 5


def test_seed_repeats_a_sampled_answer(client: OpenAI) -> None:
    kwargs = dict(model="chatloop", messages=QUESTION, max_tokens=30, temperature=1.0, seed=1234)
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    second = client.chat.completions.create(**kwargs).choices[0].message.content
    assert first == second


def test_json_object_response_parses(client: OpenAI) -> None:
    messages = [{"role": "user", "content": "Describe a cat as a JSON object with a name and an age."}]
    answer = client.chat.completions.create(
        model="chatloop", messages=messages, max_tokens=120, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(answer.choices[0].message.content), dict)


def test_json_schema_response_follows_schema(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    answer = client.chat.completions.create(
        model="chatloop",
        messages=[{"role": "user", "content": "Invent a person."}],
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    person = json.loads(answer.choices[0].message.content)
    assert set(person) == {"name", "age"} and isinstance(person["age"], int)


def test_logprobs(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model="chatloop", messages=QUESTION, max_tokens=6, logprobs=True, top_logprobs=3
    )
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens
    assert "".join(entry.token for entry in content) == answer.choices[0].message.content
    for entry in content:
        assert entry.logprob <= 0 and 1 <= len(entry.top_logprobs) <= 3
        assert entry.top_logprobs[0].logprob >= entry.logprob


def test_text_parts_and_developer_role(client: OpenAI) -> None:
    """Text parts are joined and `developer` is read as `system`: the model sees the plain conversation (with no
    system message, the chat template would add its own, so the prompt would be longer)."""
    messages = [
        {"role": "developer", "content": "Answer in one word."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is the capital "}, {"type": "text", "text": "of France?"}],
        },
    ]
    plain = [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    answer, expected = (
        client.chat.completions.create(model="chatloop", messages=conversation, max_tokens=10, temperature=0)
        for conversation in (messages, plain)
    )
    assert answer.choices[0].message.content
    assert answer.usage.prompt_tokens == expected.usage.prompt_tokens
    assert answer.choices[0].message.content == expected.choices[0].message.content


def test_models_list_names_the_alias_and_pinned_base(client: OpenAI) -> None:
    assert {model.id for model in client.models.list()} == {"chatloop", "chatloop@base"}
    pinned = client.chat.completions.create(model="chatloop@base", messages=QUESTION, max_tokens=3)
    assert pinned.system_fingerprint == "base"


BAD_REQUESTS = {
    "unknown role": ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, None),
    "empty messages": ({"messages": []}, 400, None),
    "n too large": ({"n": 10000}, 400, None),
    "n zero": ({"n": 0}, 400, None),
    "max_tokens zero": ({"max_tokens": 0}, 400, None),
    "temperature out of range": ({"temperature": 5}, 400, None),
    "too many stops": ({"stop": ["a", "b", "c", "d", "e"]}, 400, None),
    "top_logprobs without logprobs": ({"top_logprobs": 2}, 400, None),
    "unknown model": ({"model": "gpt-17"}, 404, "model_not_found"),
    "unknown pinned version": ({"model": "chatloop@v999"}, 404, "model_not_found"),
    "prompt too long": ({"messages": [{"role": "user", "content": "hello " * 3000}]}, 400, "context_length_exceeded"),
    "prompt plus answer too long": ({"max_tokens": 2040}, 400, "context_length_exceeded"),
    "image content": (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        400,
        None,
    ),
    "schema missing": ({"response_format": {"type": "json_schema"}}, 400, None),
    "seed beyond int64": ({"seed": 2**64}, 400, None),
    "stop too long": ({"stop": "x" * 257}, 400, None),
    "metadata value too long": ({"metadata": {"k": "v" * 513}}, 400, None),
    "tool_choice naming no tool": (
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
        400,
        None,
    ),
    "tool arguments not JSON": (
        {
            "messages": [
                *QUESTION,
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{x"}}]},
            ]
        },
        400,
        None,
    ),
    "functions (deprecated)": ({"functions": [WEATHER_TOOL["function"]]}, 400, "unsupported_parameter"),
    "logit_bias": ({"logit_bias": {"1": 5}}, 400, "unsupported_parameter"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_gets_openai_error(client: OpenAI, case: str) -> None:
    change, status, code = BAD_REQUESTS[case]
    kwargs = {"model": "chatloop", "messages": QUESTION, "max_tokens": 5, **change}
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**kwargs)
    assert caught.value.status_code == status
    error = caught.value.body
    assert error["message"] and error["type"] and error["code"] == code
    assert "Traceback" not in error["message"]


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_a_refusal_names_the_token_limit_the_caller_sent(client: OpenAI, limit: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="chatloop", messages=QUESTION, **{limit: 2040})
    assert caught.value.body["code"] == "context_length_exceeded" and caught.value.body["param"] == limit


def test_malformed_json_and_server_keeps_serving(server: ServerHandle, client: OpenAI) -> None:
    with server.http() as http:
        response = http.post(
            "/v1/chat/completions",
            content=b'{"model": "chatloop", "messages": [',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert client.chat.completions.create(model="chatloop", messages=QUESTION, max_tokens=3).choices


@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_missing_or_wrong_key_is_401(server: ServerHandle, key: str | None) -> None:
    with server.http(key) as http:
        response = http.post("/v1/chat/completions", json={"model": "chatloop", "messages": QUESTION})
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert "sk-wrong" not in response.text


def test_admin_key_may_chat(server: ServerHandle) -> None:
    admin = OpenAI(base_url=f"{server.base_url}/v1", api_key=server.admin_key, max_retries=0)
    assert admin.chat.completions.create(model="chatloop", messages=QUESTION, max_tokens=3).choices


def test_health_ready_metrics(server: ServerHandle, client: OpenAI) -> None:
    """The counters rise by exactly this test's own requests: each was counted, once, under its endpoint."""
    before = scrape(server)
    answer = client.chat.completions.create(model="chatloop", messages=QUESTION, max_tokens=3)
    assert httpx.get(f"{server.base_url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server.base_url}/ready").json() == {"status": "ready"}
    after = scrape(server)

    def rise(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert rise("chatloop_requests_total", endpoint="/v1/chat/completions", status="200") == 1
    assert rise("chatloop_requests_total", endpoint="/v1/chat/completions") == 1
    assert rise("chatloop_requests_total", endpoint="/health", status="200") == 1
    assert rise("chatloop_requests_total", endpoint="/ready", status="200") == 1
    assert rise("chatloop_time_to_first_token_seconds_count") == 1
    assert rise("chatloop_prompt_tokens_total") == answer.usage.prompt_tokens
    assert rise("chatloop_completion_tokens_total") == answer.usage.completion_tokens
    assert total(after, "chatloop_requests_in_flight") == 1.0  # this very /metrics request
    assert total(after, "chatloop_requests_in_flight", endpoint="/metrics") == 1.0
    assert total(after, "vllm:num_requests_running") == 0


def health_over(sock: socket.socket) -> bytes:
    """One ``GET /health`` on an open connection, and the response's status line ("" when the server closed it)."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: chatloop\r\n\r\n")
    received = b""
    while b'{"status":"ok"}' not in received and (chunk := sock.recv(4096)):
        received += chunk
    return received.split(b"\r\n", 1)[0]


def test_an_idle_connection_outlives_the_clients_keep_alive(server: ServerHandle) -> None:
    """A client reuses an idle connection for up to 5 s (httpx, the OpenAI SDK): a server that closed it at the same
    moment would fail that client's next request with a dropped connection (``ReadError('')``)."""
    url = httpx.URL(server.base_url)
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        assert health_over(sock) == b"HTTP/1.1 200 OK"
        time.sleep(6)
        assert health_over(sock) == b"HTTP/1.1 200 OK"


def test_completion_is_recorded_in_redis(server: ServerHandle, client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model="chatloop",
        messages=QUESTION,
        max_tokens=12,
        n=2,
        seed=5,
        user="alice",
        metadata={"conversation": "c-1"},
    )
    saved = record(server, answer.id)
    assert saved["status"] == "complete" and saved["version"] == "base"
    assert saved["user"] == "alice" and saved["metadata"] == {"conversation": "c-1"}
    assert saved["conversation"] == QUESTION
    assert [c["text"] for c in saved["choices"]] == [c.message.content for c in answer.choices]
    assert saved["params"]["seed"] == 5 and saved["params"]["max_tokens"] == 12
    assert saved["prompt_tokens"] == answer.usage.prompt_tokens
    assert saved["completion_tokens"] == answer.usage.completion_tokens
    assert saved["key_id"] and server.user_key not in json.dumps(saved)
    ttl = server.redis.client().ttl(keys.completion_key(answer.id))
    assert 0 < ttl <= 30 * 86400
    stream_ids = [fields["id"] for _, fields in server.redis.client().xrevrange(keys.COMPLETIONS_STREAM, count=5)]
    assert answer.id in stream_ids


def test_streamed_completion_is_recorded_before_done(server: ServerHandle, client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="chatloop", messages=QUESTION, max_tokens=10, stream=True))
    saved = record(server, chunks[0].id)
    assert saved["stream"] is True
    assert saved["choices"][0]["text"] == "".join(c.choices[0].delta.content or "" for c in chunks)


def test_store_false_keeps_no_record(server: ServerHandle, client: OpenAI) -> None:
    answer = client.chat.completions.create(model="chatloop", messages=QUESTION, max_tokens=3, store=False)
    assert server.redis.client().get(keys.completion_key(answer.id)) is None


def test_disconnect_mid_stream_aborts_generation(server: ServerHandle) -> None:
    aborted_before = metric(server, "chatloop_completions_aborted_total")
    body = {"model": "chatloop", "messages": LONG_TASK, "max_tokens": 1500, "temperature": 0, "stream": True}
    with server.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        for _ in range(5):
            next(lines)
    deadline = time.monotonic() + 10
    while metric(server, "vllm:num_requests_running") > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    generated = metric(server, "vllm:generation_tokens_total")
    time.sleep(1.5)
    assert metric(server, "vllm:num_requests_running") == 0
    assert metric(server, "vllm:generation_tokens_total") == generated, "tokens still generated for nobody"
    assert metric(server, "chatloop_completions_aborted_total") == aborted_before + 1
    saved = record(server, first["id"])
    assert saved["status"] == "aborted" and saved["completion_tokens"] < 1500


def test_redis_outage_does_not_fail_chat_and_loses_nothing(server: ServerHandle, client: OpenAI) -> None:
    kept = client.chat.completions.create(model="chatloop", messages=QUESTION, max_tokens=3)
    failures_before = metric(server, "chatloop_record_failures_total")
    server.redis.server.stop()
    try:
        during = client.chat.completions.create(model="chatloop", messages=QUESTION, max_tokens=3)
        assert during.choices[0].message.content is not None
        assert metric(server, "chatloop_record_failures_total") == failures_before + 1
        assert metric(server, "chatloop_records_waiting") == 1
    finally:
        server.redis.restart()
    assert record(server, kept.id)["id"] == kept.id, "a record written before the outage was lost"
    after = client.chat.completions.create(model="chatloop", messages=QUESTION, max_tokens=3)
    assert record(server, after.id)["status"] == "complete"
    # The answer that ended while Redis was away is written once it is back, and can then be rated.
    deadline = time.monotonic() + 10
    while server.redis.client().get(keys.completion_key(during.id)) is None:
        assert time.monotonic() < deadline, "the record of an answer that ended during the outage was never written"
        time.sleep(0.2)
    assert record(server, during.id)["choices"][0]["text"] == during.choices[0].message.content
    assert metric(server, "chatloop_records_waiting") == 0
    with server.http() as http:
        rated = http.post("/v1/feedback", json={"completion_id": during.id, "choice_index": 0, "rating": "up"})
    assert rated.status_code == 200, rated.text


async def managed_key(server: ServerHandle, key: ManagedKey) -> str:
    """The secret of a new managed key, made as the admin API makes it."""
    client = aioredis.from_url(server.redis.url)
    try:
        return await ApiKeys(client).create(key)
    finally:
        await client.aclose()


def test_answers_carry_rate_headers_and_a_key_over_its_concurrency_gets_429(server: ServerHandle, client: OpenAI):
    plain = client.chat.completions.with_raw_response.create(model="chatloop", messages=QUESTION, max_tokens=3)
    assert plain.headers["x-ratelimit-limit-requests"] == "600"
    assert int(plain.headers["x-ratelimit-remaining-requests"]) < 600
    key = run_async(managed_key(server, ManagedKey(name="one-at-a-time", max_concurrent=1, created=time.time())))
    # ignore_eos: the first answer must still be streaming when the second asks, however soon the model would stop.
    body = {"model": "chatloop", "messages": LONG_TASK, "max_tokens": 500, "stream": True, "ignore_eos": True}
    with server.http(key) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as first:
            assert first.headers["x-ratelimit-remaining-requests"] == "599"
            lines = first.iter_lines()
            opening = next(line for line in lines if line.startswith("data: "))
            slots = server.redis.client().zrange(keys.chat_in_flight_key(key_id(key)), 0, -1)
            assert len(slots) == 1, f"the first answer holds no slot in Redis ({slots}); it opened with {opening!r}"
            second = http.post("/v1/chat/completions", json={**body, "stream": False})
            if second.status_code != 429:
                rest = [line for line in lines if line.startswith("data: ")]
                noted = [line for line in server.log_path.read_text().splitlines() if " server." in line][-5:]
                pytest.fail(
                    f"admitted beside the first ({second.status_code}); the first sent {len(rest)} more chunks, the "
                    f"last {rest[-1][:100] if rest else None!r}; the server's last lines: {noted}"
                )
            assert second.json()["error"]["code"] == "concurrency_limit_exceeded"
            assert second.headers["Retry-After"] == "1"
        # The first client went away mid-answer: its slot is freed with the aborted request.
        deadline = time.monotonic() + 10
        while (third := http.post("/v1/chat/completions", json={**body, "max_tokens": 3})).status_code == 429:
            assert time.monotonic() < deadline, "the slot of a client gone mid-answer was never freed"
            time.sleep(0.2)
        assert third.status_code == 200 and third.headers["x-ratelimit-limit-requests"] == "600"
