"""Request validation that needs no engine: the bounds OpenAI documents, checked before any work is done."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.chat_api.protocol import ChatCompletionRequest, ChatMessage

BASE = {"model": "chatloop", "messages": [{"role": "user", "content": "hi"}]}


def request(**change: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({**BASE, **change})


def test_stop_string_becomes_list() -> None:
    assert request(stop="END").stop == ["END"]


@pytest.mark.parametrize("stop", [["a", "b", "c", "d", "e"], [""]])
def test_bad_stop_rejected(stop: list[str]) -> None:
    with pytest.raises(ValidationError):
        request(stop=stop)


def test_metadata_bounds() -> None:
    assert request(metadata={"regenerate_of": "chatcmpl-1"}).metadata == {"regenerate_of": "chatcmpl-1"}
    with pytest.raises(ValidationError):
        request(metadata={f"k{i}": "v" for i in range(17)})
    with pytest.raises(ValidationError):
        request(metadata={"k": "v" * 513})


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert request(max_tokens=10, max_completion_tokens=20).answer_token_limit == 20
    assert request(max_tokens=10).answer_token_limit == 10
    assert request().answer_token_limit is None


def test_text_parts_join_and_developer_is_system() -> None:
    message = ChatMessage.model_validate(
        {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    )
    assert message.text() == "ab" and message.template_role() == "system"


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "tool", "content": "x"}]},
        {"n": 0},
        {"temperature": -0.1},
        {"top_p": 0},
        {"presence_penalty": 2.5},
        {"top_logprobs": 21},
        {"response_format": {"type": "xml"}},
    ],
)
def test_out_of_range_rejected(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        request(**change)


def test_usage_in_stream_only_when_asked() -> None:
    assert not request(stream=True).include_usage_in_stream
    assert request(stream=True, stream_options={"include_usage": True}).include_usage_in_stream
