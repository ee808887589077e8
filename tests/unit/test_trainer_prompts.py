"""The trainer reads a prompt as the model read it when it answered (``trainer/chat_text.py``): a conversation with
tools through the server's tool template, with the tools the request gave, as the pair recorded them; and the
held-out split does not move for prompts without tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from core.config import ToolSettings
from feedback.export import trl_row
from server.chat_api.protocol import ChatCompletionRequest
from server.chat_api.serving import recorded_request, render_chat
from tests.factories import WEATHER_TOOL, short_over_long_pair
from trainer.chat_text import Prompt, conversation_text, prompt_text
from trainer.data import prompt_key
from trainer.models import load_tokenizer

CALLED = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
]
ANSWER = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


@pytest.fixture(scope="module")
def served_by(model_path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer as the server holds it: the model's own, the tool template passed by ``render_chat``."""
    return AutoTokenizer.from_pretrained(model_path)


@pytest.fixture(scope="module")
def trained_by(model_path: Path) -> PreTrainedTokenizerBase:
    return load_tokenizer(model_path, ToolSettings())


def as_paired(request: ChatCompletionRequest) -> Prompt:
    """The request as its completion record keeps it, and a pair of its answers after it."""
    recorded = recorded_request(request)
    return Prompt.of_pair(
        short_over_long_pair(0).model_copy(update={"prompt": recorded.conversation, "tools": recorded.tools})
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"messages": CALLED, "tools": [WEATHER_TOOL]},
        {"messages": CALLED},
        {"messages": CALLED[:2], "tools": [WEATHER_TOOL]},
        {"messages": CALLED[:2]},
    ],
    ids=["calls-and-tools", "calls-without-tools", "tools-only", "plain"],
)
def test_the_trainer_renders_a_prompt_as_the_server_did(
    fields: dict, served_by: PreTrainedTokenizerBase, trained_by: PreTrainedTokenizerBase
) -> None:
    request = ChatCompletionRequest.model_validate({"model": "chatloop", **fields})
    served = render_chat(served_by, request.messages, request.tools, ToolSettings())
    prompt = as_paired(request)
    assert trained_by.encode(prompt_text(trained_by, prompt), add_special_tokens=False) == served
    learnt = conversation_text(trained_by, prompt, ANSWER, ended=True)
    assert learnt == prompt_text(trained_by, prompt) + ANSWER + "<|im_end|>\n"


def test_a_pair_with_tools_shows_the_trainer_the_tools(trained_by: PreTrainedTokenizerBase) -> None:
    text = prompt_text(
        trained_by,
        as_paired(
            ChatCompletionRequest.model_validate({"model": "chatloop", "messages": CALLED[:2], "tools": [WEATHER_TOOL]})
        ),
    )
    assert "# Tools" in text and '"name": "get_weather"' in text


def test_a_prompt_without_tools_keeps_its_side_of_the_held_out_split() -> None:
    """The key that decides the split is what it was before tools were trained on, for a prompt without them; tools
    and calls make another prompt."""
    messages = [{"role": "user", "content": "Tell me about rivers."}]
    assert prompt_key(Prompt(messages)) == json.dumps([["user", "Tell me about rivers."]])
    with_tools = Prompt(messages, [WEATHER_TOOL])
    assert prompt_key(with_tools) != prompt_key(Prompt(messages))
    called = [*messages, {"role": "assistant", "content": "", "tool_calls": CALLED[2]["tool_calls"]}]
    uncalled = [*messages, {"role": "assistant", "content": ""}]
    assert prompt_key(Prompt(called)) != prompt_key(Prompt(uncalled))


def test_an_exported_pair_keeps_its_tools_as_trls_datasets_do() -> None:
    plain = short_over_long_pair(0)
    assert "tools" not in trl_row(plain), "a pair without tools exports as before"
    assert trl_row(plain.model_copy(update={"tools": [WEATHER_TOOL]}))["tools"] == [WEATHER_TOOL]
