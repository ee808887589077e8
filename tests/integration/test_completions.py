"""``/v1/completions`` through the official OpenAI SDK, on the real engine: a raw prompt (text or token ids),
streamed and not, ``echo``, ``logprobs``; recorded and rateable by id, never training data."""

from __future__ import annotations

import json
import uuid

import openai
import pytest
from openai import OpenAI

from core import keys
from feedback.eligibility import RAW_PROMPT
from tests.helpers import ServerHandle

pytestmark = pytest.mark.integration

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def client(server: ServerHandle) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key=server.user_key, max_retries=0, timeout=120)


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def test_a_raw_prompt_is_answered_recorded_and_rateable(server: ServerHandle, client: OpenAI, user: str) -> None:
    completion = client.completions.create(model="chatloop", prompt=PROMPT, max_tokens=6, temperature=0, user=user)
    (choice,) = completion.choices
    assert completion.id.startswith("cmpl-") and completion.object == "text_completion"
    assert choice.text and choice.finish_reason in ("stop", "length") and completion.usage.completion_tokens <= 6
    record = json.loads(server.redis.client().get(keys.completion_key(completion.id)))
    assert record["conversation"] == [{"role": "prompt", "content": PROMPT}]
    assert record["choices"][0]["text"] == choice.text and RAW_PROMPT in record["ineligible"]
    with server.http(server.user_key) as http:
        rated = http.post("/v1/feedback", json={"completion_id": completion.id, "rating": "down", "user": user})
    assert rated.status_code == 200 and rated.json()["rating"]["rating"] == "down"


def test_token_ids_echo_and_logprobs(server: ServerHandle, client: OpenAI, user: str) -> None:
    with server.http(server.user_key) as http:
        ids = http.post("/tokenize", json={"prompt": PROMPT}).json()["tokens"]
    echoed = client.completions.create(model="chatloop", prompt=ids, max_tokens=4, temperature=0, echo=True, user=user)
    plain = client.completions.create(model="chatloop", prompt=PROMPT, max_tokens=4, temperature=0, user=user)
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text
    scored = client.completions.create(model="chatloop", prompt=PROMPT, max_tokens=4, logprobs=2, temperature=0)
    logprobs = scored.choices[0].logprobs
    assert "".join(logprobs.tokens) == scored.choices[0].text and len(logprobs.token_logprobs) == 4
    assert all(len(top) <= 2 for top in logprobs.top_logprobs) and logprobs.text_offset[0] == 0


def test_a_stream_carries_the_same_answer_and_its_usage(client: OpenAI, user: str) -> None:
    whole = client.completions.create(model="chatloop", prompt=PROMPT, max_tokens=8, temperature=0, seed=1, user=user)
    chunks = list(
        client.completions.create(
            model="chatloop",
            prompt=PROMPT,
            max_tokens=8,
            temperature=0,
            seed=1,
            user=user,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"suffix": "after"}, "suffix"),
        ({"prompt": ["one", "two"]}, "prompt"),
        ({"prompt": [10**9]}, "prompt"),
        ({"best_of": 3}, "best_of"),
        ({"logprobs": 2, "echo": True}, None),
    ],
)
def test_what_is_not_offered_is_refused_clearly(server: ServerHandle, body: dict, param: str | None) -> None:
    with server.http(server.user_key) as http:
        response = http.post("/v1/completions", json={"model": "chatloop", "prompt": PROMPT, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]


def test_an_unknown_model_is_a_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-nope", prompt=PROMPT, max_tokens=2)
