"""Bodies of the conversation routes. A conversation's messages are the chat page's own shape, kept as sent."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TITLE_LENGTH = 200
MAX_MESSAGES = 2000


class ConversationBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    title: str = Field(max_length=TITLE_LENGTH)
    messages: list[dict[str, object]] = Field(max_length=MAX_MESSAGES)


class RenameRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=TITLE_LENGTH)


class ConversationSummary(BaseModel):
    id: str
    title: str | None
    updated: float


class ConversationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ConversationSummary]
