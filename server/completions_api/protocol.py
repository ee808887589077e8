"""Request and response types of ``/v1/completions`` (OpenAI's legacy text completions), in the SDK's shape.

One prompt per request: a string or token ids, bare or as a list of one. A batch of prompts is refused, so that
every answer is recorded with the one prompt it answers and can be rated in that context. Bounds and refusals
follow the chat endpoint's (``server/chat_api/protocol.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from server.chat_api.protocol import SampledRequest, Usage, refuse_unsupported

UNSUPPORTED_PARAMETERS = ("logit_bias", "suffix")
"""OpenAI's completion parameters that change what is generated, which chatloop does not honour (``suffix``, text
after the insertion point, needs a fill-in-the-middle model)."""
DEFAULT_MAX_TOKENS = 16
"""OpenAI's default for completions."""
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(SampledRequest):
    prompt: str | TokenIds | list[str] | list[TokenIds]
    best_of: int | None = Field(None, ge=1, le=1)
    """Only 1: sampling several answers and returning the best is not offered."""
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False

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
