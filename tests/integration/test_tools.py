"""Tool calling on ``/v1/chat/completions`` through the official OpenAI SDK, on the real engine: forced calls
(a named function, ``required``) in any model, streamed and not, through the SDK's stream helper; a conversation
that sends the calls' results back; recorded and rateable; a forced call kept out of training data, a free answer a
side of a pair that keeps the tools."""

from __future__ import annotations

import json

import pytest
from openai import OpenAI

from core import keys
from feedback.eligibility import CONSTRAINED
from feedback.pairs import read_all
from tests.factories import WEATHER_TOOL
from tests.helpers import ServerHandle

pytestmark = pytest.mark.integration

ASK = [{"role": "user", "content": "What is the weather in Paris today?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def client(server: ServerHandle) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key=server.user_key, max_retries=0, timeout=120)


def record(server: ServerHandle, completion_id: str) -> dict:
    raw = server.redis.client().get(keys.completion_key(completion_id))
    assert raw is not None, f"no record of {completion_id}"
    return json.loads(raw)


def test_a_named_function_is_called_with_arguments_its_schema_allows(server: ServerHandle, client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model="chatloop", messages=ASK, tools=[WEATHER_TOOL], tool_choice=NAMED, max_tokens=60, temperature=0
    )
    choice = answer.choices[0]
    (call,) = choice.message.tool_calls
    assert choice.message.content is None and choice.finish_reason == "stop"
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str) and set(arguments) <= {"city", "unit"}
    stored = record(server, answer.id)
    assert stored["tools"][0]["function"]["name"] == "get_weather"
    assert CONSTRAINED in stored["ineligible"], "a forced call must never become training data"


def test_required_calls_stream_through_the_sdks_helper(client: OpenAI) -> None:
    with client.chat.completions.stream(
        model="chatloop", messages=ASK, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=80, temperature=0
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.tool_calls and all(c.function.name == "get_weather" for c in choice.message.tool_calls)
    assert all(isinstance(json.loads(c.function.arguments)["city"], str) for c in choice.message.tool_calls)
    assert "tool_calls.function.arguments.done" in events


def test_a_streamed_named_call_arrives_in_pieces(server: ServerHandle, client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="chatloop", messages=ASK, tools=[WEATHER_TOOL], tool_choice=NAMED, max_tokens=60, stream=True
        )
    )
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(deltas) > 2, "a named call's arguments stream as they are generated"
    assert deltas[0][0].id and deltas[0][0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for step in deltas for d in step)
    assert "city" in json.loads(arguments)


def test_results_sent_back_get_an_answer_that_teaches_with_its_tools(server: ServerHandle, client: OpenAI) -> None:
    """The small default model is not trained to call tools: with ``auto`` it may answer in text or call, and
    either is a well-formed answer (the parser's reading is ``tests/unit/test_tool_calls.py``'s). Written freely,
    it is training data: a pair keeps the conversation's calls and the tools, which the trainer renders as the
    server did (``tests/unit/test_trainer_prompts.py``)."""
    called = client.chat.completions.create(
        model="chatloop", messages=ASK, tools=[WEATHER_TOOL], tool_choice=NAMED, max_tokens=60, temperature=0
    )
    call = called.choices[0].message.tool_calls[0]
    conversation = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"sky": "sunny", "celsius": 21})},
    ]
    answer = client.chat.completions.create(
        model="chatloop", messages=conversation, tools=[WEATHER_TOOL], max_tokens=30
    )
    choice = answer.choices[0]
    assert choice.finish_reason in {"stop", "length", "tool_calls"}
    assert choice.message.content or choice.message.tool_calls
    for tool_call in choice.message.tool_calls or []:
        json.loads(tool_call.function.arguments)
    stored = record(server, answer.id)
    assert stored["conversation"][1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": json.loads(call.function.arguments),
    }
    assert stored["conversation"][2]["tool_call_id"] == call.id
    assert stored["ineligible"] == []
    again = client.chat.completions.create(
        model="chatloop",
        messages=conversation,
        tools=[WEATHER_TOOL],
        max_tokens=30,
        metadata={"regenerate_of": answer.id},
    )
    choice = {"chosen": {"completion_id": again.id}, "rejected": {"completion_id": answer.id}}
    with server.http() as http:
        rated = http.post("/v1/feedback", json={"completion_id": answer.id, "choice_index": 0, "rating": "down"})
        compared = http.post("/v1/feedback", json=choice)
    assert rated.status_code == 200 and compared.status_code == 200, (rated.text, compared.text)
    # The rating makes the pair if the regeneration's link is already written, the comparison otherwise.
    (made,) = rated.json()["pairs"] + compared.json()["pairs"]
    (pair,) = [p for _, p in read_all(server.redis.client()) if p.pair_id == made["pair_id"]]
    assert pair.tools == stored["tools"] and pair.prompt[1].tool_calls == stored["conversation"][1]["tool_calls"]
