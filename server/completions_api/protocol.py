"""Request and response types of ``/v1/completions`` (OpenAI's legacy text completions), in the SDK's shape.

One prompt per request: a string or token ids, bare or as a list of one. A batch of prompts is refused, so that
every answer is recorded with the one prompt it answers and can be rated in that context. Bounds and refusals
follow the chat endpoint's (``server/chat_api/protocol.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from server.chat_api.protocol import (
    INT64_MAX,
    INT64_MIN,
    Penalty,
    StreamOptions,
    Usage,
    checked_metadata,
    checked_stop,
    refuse_unsupported,
)

UNSUPPORTED_PARAMETERS = ("logit_bias", "suffix")
"""OpenAI's completion parameters that change what is generated, which chatloop does not honour (``suffix``, text
after the insertion point, needs a fill-in-the-middle model)."""
DEFAULT_MAX_TOKENS = 16
"""OpenAI's default for completions."""
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    prompt: str | TokenIds | list[str] | list[TokenIds]
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)
    best_of: int | None = Field(None, ge=1, le=1)
    """Only 1: sampling several answers and returning the best is not offered."""
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    stop: str | list[str] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    user: str | None = Field(None, max_length=256)
    store: bool | None = None
    metadata: dict[str, str] | None = None
    """chatloop's extension, as on chat: ``regenerate_of`` links a regeneration."""
    ignore_eos: bool = False

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("suffix") == "":
            values = {key: value for key, value in values.items() if key != "suffix"}
        return refuse_unsupported(values, UNSUPPORTED_PARAMETERS)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[int] | list[str] | list[list[int]]) -> str | list[int]:
        if isinstance(value, str) or (value and isinstance(value[0], int)):
            return value
        if len(value) != 1:
            raise ValueError(
                "chatloop answers one prompt per request, so that each answer is rated with its own prompt: "
                "send one request per prompt"
            )
        return value[0]

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


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
