"""A Responses request as the chat request that answers it, and a response's output items and stream events as
they are built (server/responses_api/)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.chat_api.protocol import DeltaFunctionCall, DeltaToolCall
from server.responses_api.protocol import ResponseRequest
from server.responses_api.serving import OutputItems


def request(**fields: object) -> ResponseRequest:
    return ResponseRequest.model_validate({"model": "chatloop", "input": "Hi.", **fields})


def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    chat = request(instructions="Be brief.", max_output_tokens=5).chat_request([])
    assert [(m.role, m.content) for m in chat.messages] == [("system", "Be brief."), ("user", "Hi.")]
    assert chat.max_tokens == 5 and chat.store is True


def test_items_become_messages_with_calls_joined_to_the_assistant_before_them() -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city": "Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    ]
    messages = request(input=items).chat_request([]).messages
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert messages[1].content == "Checking." and [c.id for c in messages[1].tool_calls] == ["c1", "c2"]
    assert messages[2].tool_call_id == "c1" and messages[2].content == "sunny"


def test_a_call_whose_arguments_are_not_json_is_refused() -> None:
    bad = request(input=[{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}])
    with pytest.raises(ValidationError, match="not JSON"):
        bad.chat_request([])


def test_tools_formats_and_choices_take_their_chat_shapes() -> None:
    chat = request(
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        tool_choice={"type": "function", "name": "f"},
        text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
    ).chat_request([])
    assert chat.tools[0].function.name == "f" and chat.tool_mode == "named"
    assert chat.response_format.json_schema.json_schema == {"type": "object"}


@pytest.mark.parametrize("field", [{"reasoning": {"effort": "low"}}, {"background": True}, {"truncation": "auto"}])
def test_what_is_not_offered_is_refused(field: dict) -> None:
    with pytest.raises(ValidationError):
        request(**field)


def test_text_then_a_call_stream_as_two_items_with_numbered_events() -> None:
    items = OutputItems()
    events = items.add("Let me ", None) + items.add("check.", None)
    events += items.add(None, [DeltaToolCall(index=0, id="call_1", function=DeltaFunctionCall(name="f"))])
    events += items.add(None, [DeltaToolCall(index=0, function=DeltaFunctionCall(arguments='{"a": 1}'))])
    events += items.close("completed")
    assert [e.type for e in events] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    message, call = items.models()
    assert message.content[0].text == "Let me check." and message.status == "completed"
    assert (call.call_id, call.name, call.arguments) == ("call_1", "f", '{"a": 1}')
    assert events[-1].output_index == 1


def test_an_answer_cut_short_leaves_its_item_incomplete() -> None:
    items = OutputItems()
    items.add("Once upon", None)
    done = items.close("incomplete")
    assert done[-1].item.status == "incomplete" and items.models()[0].status == "incomplete"


def test_only_the_item_cut_short_is_incomplete() -> None:
    items = OutputItems()
    items.add("Calling.", None)
    items.add(None, [DeltaToolCall(index=0, id="call_1", function=DeltaFunctionCall(name="f", arguments='{"a"'))])
    items.close("incomplete")
    assert [item.status for item in items.models()] == ["completed", "incomplete"]
