"""Request and response types of ``/v1/chat/completions``, in the shape the OpenAI SDK sends and expects.

Static bounds (ranges OpenAI documents) live here, so that a bad value is rejected before any work is done;
bounds that depend on configuration or on the model (``n``, context length) are checked in ``serving.py``.
OpenAI's parameters that chatloop does not honour yet are refused (``UNSUPPORTED_PARAMETERS``): dropped, they
would get an answer as if they had been. Other unknown fields are ignored, as OpenAI clients send fields of newer
API versions and extensions of other servers (the SDK's ``extra_body``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from server.errors import UNSUPPORTED_PARAMETER

MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 256
MAX_METADATA_KEYS = 16
MAX_TOOLS = 128
"""As OpenAI allows."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UNSUPPORTED_PARAMETERS = (
    "audio",
    "function_call",
    "functions",
    "logit_bias",
    "modalities",
    "prediction",
    "reasoning_effort",
    "safety_identifier",
    "service_tier",
    "verbosity",
    "web_search_options",
)
"""OpenAI's chat parameters that change what is generated or returned, which chatloop does not honour yet
(``safety_identifier`` stands for the end user, which chatloop reads from ``user``; ``functions`` and
``function_call`` are the deprecated forms of ``tools`` and ``tool_choice``). Its cache hints
(``prompt_cache_key``, ``prompt_cache_retention``) change neither, and are accepted."""
NOT_GIVEN: tuple[object, ...] = (None, [], {})
"""Values that ask for nothing: an unsupported parameter set to one of them is no request to refuse."""


def refuse_unsupported(values: Any, names: tuple[str, ...]) -> Any:
    """A raw body, unless it sets one of ``names``: a 400 ``unsupported_parameter`` naming it."""
    if isinstance(values, dict):
        for name in names:
            if values.get(name) not in NOT_GIVEN:
                raise PydanticCustomError(
                    UNSUPPORTED_PARAMETER,
                    "Unsupported parameter: '{param}' is not supported by chatloop yet.",
                    {"param": name},
                )
    return values


def checked_stop(value: str | list[str] | None) -> list[str] | None:
    """Stop sequences as a list, within OpenAI's bounds."""
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if len(stops) > MAX_STOP_SEQUENCES or any(not 0 < len(stop) <= MAX_STOP_CHARS for stop in stops):
        raise ValueError(
            f"stop takes at most {MAX_STOP_SEQUENCES} non-empty sequences of at most {MAX_STOP_CHARS} characters"
        )
    return stops


def checked_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    """Metadata within OpenAI's bounds."""
    if value is not None and (
        len(value) > MAX_METADATA_KEYS or any(len(k) > 64 or len(v) > 512 for k, v in value.items())
    ):
        raise ValueError(f"metadata takes at most {MAX_METADATA_KEYS} keys of 64 chars, values of 512")
    return value


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    name: str
    arguments: str
    """JSON text, as the model wrote it (OpenAI's shape)."""


class ToolCall(BaseModel):
    id: str = Field(max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, max_length=MAX_TOOLS)
    """An earlier answer's calls, sent back by the app with their results (``tool`` messages) after it."""
    tool_call_id: str | None = Field(None, max_length=256)

    @model_validator(mode="after")
    def _tool_fields_where_they_belong(self) -> ChatMessage:
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a message of role 'tool' needs the tool_call_id it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message has tool_calls")
        for call in self.tool_calls or []:
            try:
                json.loads(call.function.arguments)
            except (ValueError, RecursionError):
                raise ValueError(f"the arguments of tool call '{call.id}' are not JSON") from None
        return self

    def text(self) -> str:
        """The content as one string: text parts are joined, as OpenAI's models see them."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def template_role(self) -> str:
        """`developer` is OpenAI's newer name for `system`; chat templates know only the latter."""
        return "system" if self.role == "developer" else self.role

    def template_message(self) -> dict[str, Any]:
        """The message as Hugging Face chat templates take it: tool call arguments as objects."""
        message: dict[str, Any] = {"role": self.template_role(), "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": json.loads(c.function.arguments)},
                }
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class FunctionDefinition(BaseModel):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    """A JSON schema of the arguments."""
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(BaseModel):
    include_usage: bool = False


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class SampledRequest(BaseModel):
    """What chat and text completions ask of the sampler alike, with the same bounds
    (``server/answers/generation.py: Generation.sampling_params``)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    stop: str | list[str] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    user: str | None = Field(None, max_length=256)
    store: bool | None = None
    metadata: dict[str, str] | None = None
    """Also chatloop's: ``regenerate_of`` links a regeneration."""
    ignore_eos: bool = False
    """vLLM's extension, which its benchmark client sends: generate to the token limit, past end-of-sequence."""

    @field_validator("stream_options")
    @classmethod
    def _only_when_streamed(cls, value: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        """As OpenAI and vLLM refuse it: options of a stream that will not be."""
        if value is not None and not info.data.get("stream"):
            raise ValueError("stream_options is only allowed when stream is true.")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        return checked_stop(value)

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return checked_metadata(value)

    @property
    def include_usage_in_stream(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(SampledRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, values: Any) -> Any:
        return refuse_unsupported(values, UNSUPPORTED_PARAMETERS)

    @property
    def answer_token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def token_limit_name(self) -> str:
        """The parameter that set ``answer_token_limit``: the one a refusal names."""
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    @property
    def tool_mode(self) -> Literal["none", "auto", "required", "named"]:
        """What the answer may hold: text only, text or calls (the default with tools), calls, or one named call."""
        if not self.tools or self.tool_choice == "none":
            return "none"
        if isinstance(self.tool_choice, NamedToolChoice):
            return "named"
        return self.tool_choice or "auto"


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[Choice]
    usage: Usage


class DeltaFunctionCall(BaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
