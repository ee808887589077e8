"""Request and response types of ``/tokenize`` and ``/detokenize``, in the shape vLLM's OpenAI server uses, so that a
client written against vLLM's server (counting tokens, checking a prompt's fit) works against chatloop unchanged."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.chat_api.protocol import MAX_TOOLS, ChatMessage, Tool, refuse_unsupported

UNSUPPORTED_PARAMETERS = ("chat_template", "chat_template_kwargs", "mm_processor_kwargs", "media_io_kwargs")
"""vLLM's parameters that change the rendering, which chatloop does not honour yet: ignored, they would give a
count that the chat endpoint does not charge."""


class TokenizeTextRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool = False


class TokenizeChatRequest(BaseModel):
    """Messages as the chat endpoint renders them: through the model's chat template."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    return_token_strs: bool = False

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, values: Any) -> Any:
        return refuse_unsupported(values, UNSUPPORTED_PARAMETERS)

    @model_validator(mode="after")
    def _one_ending(self) -> TokenizeChatRequest:
        if self.add_generation_prompt and self.continue_final_message:
            raise ValueError("Cannot set both continue_final_message and add_generation_prompt to true.")
        return self


TokenizeRequest = TokenizeChatRequest | TokenizeTextRequest
"""A body with ``messages`` is a chat; one with ``prompt``, a text (pydantic tries the chat first)."""


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0)]]


class DetokenizeResponse(BaseModel):
    prompt: str
