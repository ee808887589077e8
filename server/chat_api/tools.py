"""Tool calling on chat completions: what an answer may hold, the constraint that forces calls, and the calls read
back out of the answer, whole or as streamed deltas.

``tool_choice`` decides (``ChatCompletionRequest.tool_mode``):

- ``required`` and a named function work with any model: the engine's structured outputs constrain the answer to
  JSON that the tools' schemas allow (vLLM's ``get_json_schema_from_tools``: for ``required`` a list of
  ``{"name", "parameters"}``, for a named function its arguments), and that JSON is the call.
- ``auto`` lets the model write text or calls in its own format, which a vLLM tool parser (``tools.parser``,
  Hermes's ``<tool_call>`` by default) reads back, as vLLM's server does. The chat template must render the tools
  in the same format: ``core/templates/chatml_tools.jinja`` does for the default model's family.

As OpenAI answers: calls come with ``finish_reason`` ``tool_calls``, except a named function's, which ends as
``stop``; an answer cut off by its token limit keeps ``length``. A forced answer that does not parse (cut off
mid-JSON) is returned as text.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as VllmChatRequest
from vllm.exceptions import VLLMClientError
from vllm.sampling_params import StructuredOutputsParams
from vllm.tokenizers import TokenizerLike
from vllm.tool_parsers import ToolParser, ToolParserManager
from vllm.tool_parsers.utils import get_json_schema_from_tools

from core.config import ToolSettings
from server.chat_api.protocol import (
    ChatCompletionRequest,
    DeltaFunctionCall,
    DeltaToolCall,
    FunctionCall,
    NamedToolChoice,
    ToolCall,
)
from server.errors import ApiError


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _vllm_request(request: ChatCompletionRequest) -> VllmChatRequest:
    """vLLM's own request type, which its tool helpers and parsers take."""
    choice = request.tool_choice
    try:
        return VllmChatRequest.model_validate(
            {
                "model": request.model,
                "messages": [],
                "tools": [tool.model_dump(exclude_none=True) for tool in request.tools or []],
                "tool_choice": choice.model_dump() if isinstance(choice, NamedToolChoice) else choice,
                "parallel_tool_calls": request.parallel_tool_calls,
            }
        )
    except ValidationError as exc:
        raise ApiError(400, f"Invalid tools: {exc.errors()[0]['msg']}", param="tools") from exc


def check_tool_choice(request: ChatCompletionRequest) -> None:
    """A choice that asks for calls needs tools, and a named one a tool of that name."""
    choice = request.tool_choice
    if choice not in (None, "none") and not request.tools:
        raise ApiError(400, "tool_choice needs tools.", param="tool_choice")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in {t.function.name for t in request.tools}:
        message = f"tool_choice names the function '{choice.function.name}', which is not in tools."
        raise ApiError(400, message, param="tool_choice")


def forced_calls(request: ChatCompletionRequest) -> StructuredOutputsParams | None:
    """The constraint for ``required`` or a named function; None when the model chooses."""
    if request.tool_mode not in ("required", "named"):
        return None
    if request.response_format is not None and request.response_format.type != "text":
        raise ApiError(400, "response_format cannot be combined with a forced tool_choice.", param="response_format")
    vllm_request = _vllm_request(request)
    try:
        schema = get_json_schema_from_tools(vllm_request.tool_choice, vllm_request.tools, request.parallel_tool_calls)
    except (VLLMClientError, ValueError) as exc:
        raise ApiError(400, f"Invalid tools: {exc}", param="tools") from exc
    return StructuredOutputsParams(json=schema)


@dataclass
class ParsedAnswer:
    content: str | None
    tool_calls: list[ToolCall]
    finish_reason: str | None


class ToolCalls:
    """One request's reading of its answers: whole (``parse``) or a choice's stream (``stream``)."""

    def __init__(self, request: ChatCompletionRequest, tokenizer: TokenizerLike, settings: ToolSettings):
        self.request = request
        self.mode = request.tool_mode
        self.tokenizer = tokenizer
        self.parser_class = ToolParserManager.get_tool_parser(settings.parser) if self.mode == "auto" else None
        self.vllm_request = _vllm_request(request) if self.mode == "auto" else None

    def parse(self, text: str, finish_reason: str | None) -> ParsedAnswer:
        if self.mode == "none":
            return ParsedAnswer(text, [], finish_reason)
        if self.mode == "auto":
            extracted = self._parser().extract_tool_calls(text, self.vllm_request)
            calls = [_call(c.function.name, c.function.arguments) for c in extracted.tool_calls]
            return ParsedAnswer(extracted.content if calls else text, calls, _finish(bool(calls), finish_reason))
        calls = self._forced(text)
        if calls is None:
            return ParsedAnswer(text, [], finish_reason)
        return ParsedAnswer(None, calls, finish_reason if self.mode == "named" else _finish(True, finish_reason))

    def _forced(self, text: str) -> list[ToolCall] | None:
        """The calls in a constrained answer; None if it does not parse (cut off by its token limit)."""
        try:
            value = json.loads(text)
            if self.mode == "named":
                assert isinstance(self.request.tool_choice, NamedToolChoice)
                return [_call(self.request.tool_choice.function.name, text)]  # as generated, as it streams
            return [_call(item["name"], json.dumps(item["parameters"], ensure_ascii=False)) for item in value]
        except (ValueError, KeyError, TypeError):
            return None

    def _parser(self) -> ToolParser:
        assert self.parser_class is not None and self.vllm_request is not None
        return self.parser_class(self.tokenizer, self.vllm_request.tools)

    def stream(self) -> ToolCallStream:
        return ToolCallStream(self, self._parser() if self.mode == "auto" else None)


@dataclass
class ToolCallStream:
    """One choice's deltas: text as it comes without tools; with ``auto``, what the parser releases; a named
    function's arguments as they come; ``required``'s list of calls once whole (it is only a call when it parses)."""

    calls: ToolCalls
    parser: ToolParser | None
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    named_id: str | None = None
    called: bool = False

    def step(self, delta_text: str, delta_ids: Sequence[int]) -> tuple[str | None, list[DeltaToolCall] | None]:
        """The content and tool call deltas to send for one step of the engine."""
        mode = self.calls.mode
        if mode == "none":  # plain streaming, every chunk: nothing to keep
            return delta_text, None
        previous_text, previous_ids = self.text, list(self.token_ids)
        self.text += delta_text
        self.token_ids.extend(delta_ids)
        if mode == "required":
            return None, None
        if mode == "named":
            return None, self._named(delta_text)
        message = self.parser.extract_tool_calls_streaming(
            previous_text,
            self.text,
            delta_text,
            previous_ids,
            self.token_ids,
            list(delta_ids),
            self.calls.vllm_request,
        )
        if message is None:
            return None, None
        deltas = [
            DeltaToolCall(
                index=d.index,
                id=d.id,
                type="function" if d.id else None,
                function=DeltaFunctionCall(name=d.function.name, arguments=d.function.arguments)
                if d.function
                else DeltaFunctionCall(),
            )
            for d in message.tool_calls or []
        ]
        self.called = self.called or bool(deltas)
        return message.content, deltas or None

    def _named(self, delta_text: str) -> list[DeltaToolCall]:
        if self.named_id is None:
            self.named_id = call_id()
            assert isinstance(self.calls.request.tool_choice, NamedToolChoice)
            name = self.calls.request.tool_choice.function.name
            head = DeltaToolCall(index=0, id=self.named_id, type="function", function=DeltaFunctionCall(name=name))
            return [head, DeltaToolCall(index=0, function=DeltaFunctionCall(arguments=delta_text))]
        return [DeltaToolCall(index=0, function=DeltaFunctionCall(arguments=delta_text))]

    def advance(
        self, delta_text: str, delta_ids: Sequence[int], finish_reason: str | None
    ) -> tuple[str | None, list[DeltaToolCall] | None, str | None]:
        """One engine step (``step``), and what ``end`` releases when the choice finished with it."""
        content, calls = self.step(delta_text, delta_ids)
        if finish_reason is not None:
            more_content, more_calls, finish_reason = self.end(finish_reason)
            content = content + more_content if content and more_content else content or more_content
            calls = [*(calls or []), *(more_calls or [])] or None
        return content, calls, finish_reason

    def end(self, finish_reason: str | None) -> tuple[str | None, list[DeltaToolCall] | None, str | None]:
        """What is still to send once the choice has finished, and its finish reason."""
        mode = self.calls.mode
        if mode == "required":
            parsed = self.calls.parse(self.text, finish_reason)
            if not parsed.tool_calls:
                return parsed.content, None, finish_reason
            deltas = [
                DeltaToolCall(index=i, id=c.id, type="function", function=DeltaFunctionCall(**c.function.model_dump()))
                for i, c in enumerate(parsed.tool_calls)
            ]
            return None, deltas, parsed.finish_reason
        if mode == "named":
            return None, None, finish_reason
        if mode == "auto" and self.called:
            rest = self.parser.get_remaining_unstreamed_args()
            index = len(self.parser.prev_tool_call_arr) - 1
            deltas = [DeltaToolCall(index=index, function=DeltaFunctionCall(arguments=rest))] if rest else None
            return None, deltas, _finish(True, finish_reason)
        return None, None, finish_reason


def _call(name: str, arguments: str) -> ToolCall:
    return ToolCall(id=call_id(), function=FunctionCall(name=name, arguments=arguments))


def _finish(called: bool, finish_reason: str | None) -> str | None:
    return "tool_calls" if called and finish_reason == "stop" else finish_reason
