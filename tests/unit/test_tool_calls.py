"""Tool calls read out of answers (``server/chat_api/tools.py``), whole and streamed, with the model's tokenizer and
vLLM's Hermes parser; the constraint a forced choice puts on generation; the tool template's rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from core.config import ToolSettings
from server.chat_api.protocol import ChatCompletionRequest, ChatMessage
from server.chat_api.serving import render_chat
from server.chat_api.tools import ToolCalls, check_tool_choice, forced_calls
from server.errors import ApiError
from tests.factories import WEATHER_TOOL

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
USER = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def tokenizer(model_path: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(model_path)


def request(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "chatloop", "messages": USER, "tools": [WEATHER_TOOL], **fields}
    )


NAMED = {"type": "function", "function": {"name": "get_weather"}}


def test_a_named_function_gets_its_arguments_schema_and_ends_as_stop(tokenizer: PreTrainedTokenizerBase) -> None:
    named = request(tool_choice=NAMED)
    assert forced_calls(named).json == WEATHER_TOOL["function"]["parameters"]
    answer = ToolCalls(named, tokenizer, ToolSettings()).parse('{"city": "Paris"}', "stop")
    (call,) = answer.tool_calls
    assert (answer.content, answer.finish_reason) == (None, "stop")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_")


def test_required_is_a_list_of_calls_one_when_parallel_calls_are_off(tokenizer: PreTrainedTokenizerBase) -> None:
    schema = forced_calls(request(tool_choice="required", parallel_tool_calls=False)).json
    assert (schema["type"], schema["minItems"], schema["maxItems"]) == ("array", 1, 1)
    assert "maxItems" not in forced_calls(request(tool_choice="required")).json
    calls = ToolCalls(request(tool_choice="required"), tokenizer, ToolSettings())
    text = '[{"name": "get_weather", "parameters": {"city": "Oslo"}}, {"name": "get_weather", "parameters": {}}]'
    answer = calls.parse(text, "stop")
    assert [json.loads(c.function.arguments) for c in answer.tool_calls] == [{"city": "Oslo"}, {}]
    assert answer.finish_reason == "tool_calls" and answer.content is None


def test_a_forced_answer_cut_off_mid_json_is_text(tokenizer: PreTrainedTokenizerBase) -> None:
    answer = ToolCalls(request(tool_choice="required"), tokenizer, ToolSettings()).parse('[{"name": "get_w', "length")
    assert (answer.content, answer.tool_calls, answer.finish_reason) == ('[{"name": "get_w', [], "length")


def test_auto_reads_hermes_calls_and_leaves_plain_text_alone(tokenizer: PreTrainedTokenizerBase) -> None:
    calls = ToolCalls(request(), tokenizer, ToolSettings())
    assert forced_calls(request()) is None
    called = calls.parse("Let me look. " + CALL, "stop")
    assert called.content == "Let me look. " and called.finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in called.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    plain = calls.parse("It is sunny.", "stop")
    assert (plain.content, plain.tool_calls, plain.finish_reason) == ("It is sunny.", [], "stop")


def stream_of(calls: ToolCalls, tokenizer: PreTrainedTokenizerBase, pieces: list[str]) -> tuple[str, dict, str | None]:
    """Content, calls by index ({id, name, arguments}) and finish reason, as a client assembles the deltas."""
    stream = calls.stream()
    content, assembled, finish = "", {}, None
    for i, piece in enumerate(pieces):
        text, deltas = stream.step(piece, tokenizer.encode(piece, add_special_tokens=False))
        if i == len(pieces) - 1:
            more_text, more, finish = stream.end("stop")
            text, deltas = (text or "") + (more_text or ""), [*(deltas or []), *(more or [])]
        content += text or ""
        for delta in deltas or []:
            call = assembled.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = call["id"] or delta.id
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    return content, assembled, finish


def test_streamed_auto_calls_assemble_into_the_whole_answer(tokenizer: PreTrainedTokenizerBase) -> None:
    pieces = [
        "Let me ",
        "look. ",
        "<tool_",
        "call>\n",
        '{"name": "get_weather", ',
        '"arguments": {"city": "Par',
        'is"}}\n</tool_call>',
    ]
    content, calls, finish = stream_of(ToolCalls(request(), tokenizer, ToolSettings()), tokenizer, pieces)
    assert content == "Let me look. " and finish == "tool_calls"
    assert calls[0]["id"] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}


def test_streamed_named_and_required_calls_assemble(tokenizer: PreTrainedTokenizerBase) -> None:
    content, calls, finish = stream_of(
        ToolCalls(request(tool_choice=NAMED), tokenizer, ToolSettings()), tokenizer, ['{"city": ', '"Rome"}']
    )
    assert (content, finish) == ("", "stop")
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Rome"}
    pieces = ['[{"name": "get_weather", ', '"parameters": {"city": "Rome"}}]']
    content, calls, finish = stream_of(
        ToolCalls(request(tool_choice="required"), tokenizer, ToolSettings()), tokenizer, pieces
    )
    assert (content, finish) == ("", "tool_calls")
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Rome"}


def test_without_tools_the_text_streams_as_it_comes(tokenizer: PreTrainedTokenizerBase) -> None:
    plain = ChatCompletionRequest.model_validate({"model": "chatloop", "messages": USER})
    assert stream_of(ToolCalls(plain, tokenizer, ToolSettings()), tokenizer, ["Sun", "ny."]) == ("Sunny.", {}, "stop")


@pytest.mark.parametrize(
    ("fields", "wrong"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "'get_time', which is not in tools"),
        ({"tools": None, "tool_choice": "required"}, "tool_choice needs tools"),
    ],
)
def test_a_tool_choice_without_its_tool_is_refused(fields: dict, wrong: str) -> None:
    with pytest.raises(ApiError, match=wrong) as caught:
        check_tool_choice(request(**fields))
    assert (caught.value.status, caught.value.param) == (400, "tool_choice")


@pytest.mark.parametrize(
    ("fields", "wrong"),
    [
        ({"messages": [*USER, {"role": "tool", "content": "sunny"}]}, "tool_call_id"),
        (
            {
                "messages": [
                    *USER,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    },
                ]
            },
            "not JSON",
        ),
        ({"messages": [{"role": "user", "content": "hi", "tool_calls": []}, *USER]}, None),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": "hi",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
                    }
                ]
            },
            "only an assistant",
        ),
        ({"tools": [{"type": "function", "function": {"name": "no spaces allowed"}}]}, "pattern"),
    ],
)
def test_bad_tool_messages_and_definitions_are_refused(fields: dict, wrong: str | None) -> None:
    if wrong is None:
        assert request(**fields)
        return
    with pytest.raises(ValidationError, match=wrong):
        request(**fields)


def test_the_tool_template_renders_a_plain_chat_as_the_models_own(tokenizer: PreTrainedTokenizerBase) -> None:
    """So that a conversation reads the same to the model whether or not a tool appears later in it."""
    messages = [ChatMessage.model_validate(m) for m in [{"role": "system", "content": "Be brief."}, *USER]]
    plain = render_chat(tokenizer, messages, add_generation_prompt=False)
    called = ChatMessage.model_validate(
        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "get_weather", "arguments": "{}"}}]}
    )
    answered = ChatMessage.model_validate({"role": "tool", "tool_call_id": "c1", "content": "sunny"})
    with_calls = render_chat(tokenizer, [*messages, called, answered])
    assert with_calls[: len(plain)] == plain, "the conversation before the call renders as without tools"
    text = tokenizer.decode(with_calls)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>' in text
    assert "<tool_response>\nsunny\n</tool_response>" in text
    tools = tokenizer.decode(render_chat(tokenizer, messages, [request().tools[0]], ToolSettings()))
    assert "Be brief.\n\n# Tools" in tools and '"name": "get_weather"' in tools
