"""``/v1/responses`` through the official OpenAI SDK, on the real engine: plain and streamed answers (the SDK's
stream helper), continued conversations, function tools, JSON output, stored responses (retrieve, delete, cancel,
per principal), and every response recorded and rateable like a chat completion."""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest
from openai import OpenAI

from core import keys
from tests.factories import WEATHER_TOOL
from tests.helpers import ServerHandle

pytestmark = pytest.mark.integration

FUNCTION_TOOL = {"type": "function", **WEATHER_TOOL["function"]}
"""The same tool in the Responses API's flat shape."""


@pytest.fixture(scope="module")
def client(server: ServerHandle) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key=server.user_key, max_retries=0, timeout=120)


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def record(server: ServerHandle, response_id: str) -> dict:
    raw = server.redis.client().get(keys.completion_key(response_id))
    assert raw is not None, f"no record of {response_id}"
    return json.loads(raw)


def rate(server: ServerHandle, body: dict) -> httpx.Response:
    with server.http(server.user_key) as http:
        return http.post("/v1/feedback", json=body)


def test_an_answer_is_recorded_with_its_version_and_can_be_rated(
    server: ServerHandle, client: OpenAI, user: str
) -> None:
    response = client.responses.create(
        model="chatloop", input="Name a fruit.", instructions="Answer in one word.", max_output_tokens=8, user=user
    )
    assert response.id.startswith("resp_") and response.status in ("completed", "incomplete")
    assert response.output_text and response.output[0].type == "message"
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 8
    stored = record(server, response.id)
    assert stored["version"] == "base" and stored["conversation"][0] == {
        "role": "system",
        "content": "Answer in one word.",
    }
    assert stored["choices"][0]["text"] == response.output_text
    rated = rate(server, {"completion_id": response.id, "rating": "up", "user": user})
    assert rated.status_code == 200, rated.text


def test_a_regenerated_response_is_linked_and_makes_a_pair(server: ServerHandle, client: OpenAI, user: str) -> None:
    first = client.responses.create(model="chatloop", input="Name a colour.", max_output_tokens=8, user=user)
    second = client.responses.create(
        model="chatloop", input="Name a colour.", max_output_tokens=8, user=user, metadata={"regenerate_of": first.id}
    )
    made = rate(server, {"completion_id": second.id, "rating": "up", "user": user}).json()["pairs"]
    assert [(p["rule"], p["rejected"]["completion_id"]) for p in made] == [("regenerate_up", first.id)]


def test_the_sdks_stream_helper_gets_the_same_answer_that_is_stored(client: OpenAI, user: str) -> None:
    with client.responses.stream(  # greedy, so that the answer ends where it does every time, well within its limit
        model="chatloop",
        input="Name a fruit.",
        instructions="Answer in one word.",
        max_output_tokens=200,
        temperature=0,
        user=user,
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_response()
    assert events[:2] == ["response.created", "response.in_progress"] and events[-1] == "response.completed"
    assert "response.output_text.delta" in events and final.output_text and final.status == "completed"
    fetched = client.responses.retrieve(final.id)
    assert fetched.output_text == final.output_text and fetched.usage.output_tokens == final.usage.output_tokens


def test_an_answer_cut_short_ends_the_stream_as_incomplete(client: OpenAI, user: str) -> None:
    events = list(
        client.responses.create(
            model="chatloop", input="Tell a long story.", max_output_tokens=12, stream=True, user=user
        )
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    last = events[-1]
    assert last.type == "response.incomplete" and last.response.incomplete_details.reason == "max_output_tokens"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    fetched = client.responses.retrieve(last.response.id)
    assert fetched.status == "incomplete" and fetched.output_text == text and fetched.usage.output_tokens == 12


def test_a_response_continues_from_the_previous_one_without_its_instructions(
    server: ServerHandle, client: OpenAI, user: str
) -> None:
    first = client.responses.create(
        model="chatloop", input="My name is Ada.", instructions="Be brief.", max_output_tokens=8, user=user
    )
    second = client.responses.create(
        model="chatloop", input="What is my name?", previous_response_id=first.id, max_output_tokens=8, user=user
    )
    assert second.previous_response_id == first.id
    conversation = record(server, second.id)["conversation"]
    assert conversation == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "What is my name?"},
    ]


def test_a_named_function_is_called_and_its_output_answered(server: ServerHandle, client: OpenAI, user: str) -> None:
    called = client.responses.create(
        model="chatloop",
        input="What is the weather in Paris?",
        tools=[FUNCTION_TOOL],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=60,
        temperature=0,
        user=user,
    )
    (call,) = called.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id.startswith("call_")
    assert isinstance(json.loads(call.arguments)["city"], str)
    assert "constrained_decoding" in record(server, called.id)["ineligible"]
    answered = client.responses.create(
        model="chatloop",
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "clear"}'}],
        tools=[FUNCTION_TOOL],
        max_output_tokens=16,
        user=user,
    )
    assert answered.output, answered
    messages = record(server, answered.id)["conversation"]
    assert messages[-2]["tool_calls"][0]["id"] == call.call_id
    assert messages[-1] == {"role": "tool", "content": '{"sky": "clear"}', "tool_call_id": call.call_id}


def test_a_streamed_function_call_arrives_in_pieces(client: OpenAI, user: str) -> None:
    with client.responses.stream(
        model="chatloop",
        input="What is the weather in Rome?",
        tools=[FUNCTION_TOOL],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=60,
        user=user,
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_response()
    assert events.count("response.function_call_arguments.delta") > 2
    assert "response.function_call_arguments.done" in events
    assert final.output[0].type == "function_call" and "city" in json.loads(final.output[0].arguments)


def test_a_call_cut_off_mid_arguments_cannot_be_continued(client: OpenAI, user: str) -> None:
    events = list(
        client.responses.create(
            model="chatloop",
            input="What is the weather in Oslo?",
            tools=[FUNCTION_TOOL],
            tool_choice={"type": "function", "name": "get_weather"},
            max_output_tokens=3,
            stream=True,
            user=user,
        )
    )
    cut = events[-1].response
    assert cut.status == "incomplete" and cut.output[0].type == "function_call"
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="chatloop", input="Go on.", previous_response_id=cut.id, user=user)
    assert refused.value.param == "previous_response_id"


def test_a_json_schema_shapes_the_text(client: OpenAI, user: str) -> None:
    schema = {
        "type": "object",
        "properties": {"fruit": {"type": "string"}},
        "required": ["fruit"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model="chatloop",
        input="Name a fruit.",
        text={"format": {"type": "json_schema", "name": "fruit", "schema": schema}},
        max_output_tokens=40,
        temperature=0,
        user=user,
    )
    assert isinstance(json.loads(response.output_text)["fruit"], str)


def test_stored_responses_belong_to_their_principal(server: ServerHandle, client: OpenAI, user: str) -> None:
    response = client.responses.create(model="chatloop", input="Hello.", max_output_tokens=4, user=user)
    other = OpenAI(base_url=f"{server.base_url}/v1", api_key=server.admin_key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="chatloop", input="And?", previous_response_id=response.id)
    with pytest.raises(openai.BadRequestError, match="synchronous"):
        client.responses.cancel(response.id)
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    rated = rate(server, {"completion_id": response.id, "rating": "up", "user": user})
    assert rated.status_code == 200, "a deleted response's answer keeps its record for feedback"
    chat = client.chat.completions.create(model="chatloop", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(chat.id)


def test_a_response_not_stored_cannot_be_fetched(server: ServerHandle, client: OpenAI, user: str) -> None:
    response = client.responses.create(model="chatloop", input="Hi.", max_output_tokens=4, store=False, user=user)
    assert server.redis.client().get(keys.completion_key(response.id)) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"}]}, "input"),
        ({"previous_response_id": "resp_nope"}, "previous_response_id"),
        ({"input": "hello " * 3000}, "input"),
        ({"max_output_tokens": 2040}, "max_output_tokens"),
    ],
)
def test_what_is_not_offered_is_refused_clearly(server: ServerHandle, body: dict, param: str) -> None:
    with server.http(server.user_key) as http:
        response = http.post("/v1/responses", json={"model": "chatloop", "input": "Hi.", **body})
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]


def test_metrics_count_the_responses_routes(server: ServerHandle, client: OpenAI, user: str) -> None:
    client.responses.retrieve(client.responses.create(model="chatloop", input="Hi.", max_output_tokens=2, user=user).id)
    with server.http(None) as http:
        text = http.get("/metrics").text
    assert 'chatloop_requests_total{endpoint="/v1/responses",status="200"}' in text
    assert 'endpoint="/v1/responses/{id}"' in text
