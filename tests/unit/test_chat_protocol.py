"""Request validation that needs no engine: the bounds OpenAI documents, checked before any work is done."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.chat_api.protocol import UNSUPPORTED_PARAMETERS, ChatCompletionRequest, ChatMessage

BASE = {"model": "chatloop", "messages": [{"role": "user", "content": "hi"}]}


def request(**change: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({**BASE, **change})


def test_stop_string_becomes_list() -> None:
    assert request(stop="END").stop == ["END"]


@pytest.mark.parametrize("stop", [["a", "b", "c", "d", "e"], [""], "x" * 257, ["ok", "x" * 257]])
def test_bad_stop_rejected(stop: list[str]) -> None:
    with pytest.raises(ValidationError):
        request(stop=stop)


def test_four_stops_of_256_characters_are_accepted() -> None:
    assert request(stop=["x" * 256] * 4).stop == ["x" * 256] * 4


def test_metadata_bounds() -> None:
    assert request(metadata={"regenerate_of": "chatcmpl-1"}).metadata == {"regenerate_of": "chatcmpl-1"}
    assert len(request(metadata={f"k{i:062}": "v" * 512 for i in range(16)}).metadata) == 16
    for metadata in ({f"k{i}": "v" for i in range(17)}, {"k": "v" * 513}, {"k" * 65: "v"}, {"k": 1}, {"k": None}):
        with pytest.raises(ValidationError):
            request(metadata=metadata)


@pytest.mark.parametrize("seed", [-(2**63), 0, 2**63 - 1])
def test_a_seed_is_an_int64(seed: int) -> None:
    assert request(seed=seed).seed == seed


@pytest.mark.parametrize("seed", [2**63, 2**64, -(2**63) - 1, 1.5])
def test_a_seed_beyond_int64_is_refused(seed: int | float) -> None:
    with pytest.raises(ValidationError, match="seed"):
        request(seed=seed)


@pytest.mark.parametrize("name", UNSUPPORTED_PARAMETERS)
def test_each_unsupported_parameter_is_refused_by_name(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        request(**{name: "auto"})
    (error,) = caught.value.errors()
    assert (error["type"], error["ctx"]) == ("unsupported_parameter", {"param": name})
    assert f"'{name}'" in error["msg"]


def test_unsupported_parameters_that_ask_for_nothing_and_unknown_fields_are_accepted() -> None:
    assert request(tools=None, tool_choice=None, logit_bias={}, functions=[])
    assert request(prompt_cache_key="conversation-1", top_k=5)


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
        {"n": -1},
        {"max_tokens": 0},
        {"max_tokens": -5},
        {"max_completion_tokens": 0},
        {"max_completion_tokens": -(2**70)},
        {"top_logprobs": -1},
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
