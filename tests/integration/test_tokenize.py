"""``/tokenize`` and ``/detokenize`` as vLLM's server offers them, on the served model's tokenizer."""

from __future__ import annotations

import pytest
from openai import OpenAI

from core.config import Settings
from tests.factories import WEATHER_TOOL
from tests.helpers import ServerHandle

pytestmark = pytest.mark.integration

MESSAGES = [
    {"role": "system", "content": "You answer in French."},
    {"role": "user", "content": "How are you today? Tell me in a sentence."},
]


@pytest.fixture(scope="module")
def client(server: ServerHandle) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key=server.user_key, max_retries=0, timeout=120)


@pytest.mark.parametrize("extra", [{}, {"tools": [WEATHER_TOOL]}], ids=["plain", "with tools"])
def test_a_chat_counts_what_the_chat_endpoint_charges(server: ServerHandle, client: OpenAI, extra: dict) -> None:
    with server.http() as http:
        body = {"model": "chatloop", "messages": MESSAGES, "return_token_strs": True, **extra}
        counted = http.post("/tokenize", json=body)
    assert counted.status_code == 200, counted.text
    assert counted.headers["x-ratelimit-limit-requests"]
    body = counted.json()
    answer = client.chat.completions.create(model="chatloop", messages=MESSAGES, max_tokens=1, **extra)
    assert body["count"] == len(body["tokens"]) == answer.usage.prompt_tokens
    assert body["max_model_len"] == Settings(_env_file=None).max_model_len
    assert len(body["token_strs"]) == body["count"]


def test_text_round_trips_and_a_chat_can_leave_its_last_message_open(server: ServerHandle) -> None:
    text = "Grüße aus Zürich, 42 × 7 = 294."
    with server.http() as http:
        plain = http.post("/tokenize", json={"prompt": text, "add_special_tokens": False}).json()
        assert http.post("/detokenize", json={"tokens": plain["tokens"]}).json() == {"prompt": text}
        assert plain["token_strs"] is None
        opened = {"messages": [*MESSAGES, {"role": "assistant", "content": "Je vais"}]}
        closed = http.post("/tokenize", json=opened).json()
        open_ended = http.post(
            "/tokenize", json={**opened, "add_generation_prompt": False, "continue_final_message": True}
        ).json()
        prompt = http.post("/detokenize", json={"tokens": open_ended["tokens"]}).json()["prompt"]
    assert prompt.endswith("Je vais"), "the last message is continued, not closed"
    assert closed["count"] > open_ended["count"]
    assert closed["tokens"][: open_ended["count"]] == open_ended["tokens"], "the same text, before its ending"


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/tokenize", {"model": "gpt-4o", "prompt": "hi"}, 404, "model"),
        ("/tokenize", {"messages": MESSAGES, "continue_final_message": True}, 400, None),
        ("/tokenize", {"messages": []}, 400, None),
        ("/tokenize", {"messages": MESSAGES, "chat_template": "{{ messages }}"}, 400, "chat_template"),
        ("/detokenize", {"tokens": [10**9]}, 400, "tokens"),
        ("/detokenize", {"tokens": [-1]}, 400, None),
        ("/detokenize", {"tokens": [1] * 100_000}, 400, "tokens"),
    ],
)
def test_bad_requests_get_openai_errors(server: ServerHandle, path: str, body: dict, status: int, param: str) -> None:
    with server.http() as http:
        response = http.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param


def test_tokenizing_needs_a_key(server: ServerHandle) -> None:
    with server.http(key=None) as http:
        assert http.post("/tokenize", json={"prompt": "hi"}).status_code == 401
        assert http.post("/detokenize", json={"tokens": [1]}).status_code == 401
