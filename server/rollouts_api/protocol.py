"""Request and response bodies of the rollouts API, which a trainer calls to sample with its adapter in the making."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from core.policy import TRAINEES_DIRNAME

TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class RolloutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    adapter: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description=f"A PEFT LoRA adapter over the base model, in the versions folder's `{TRAINEES_DIRNAME}/`: a "
        "name, never a path, so no request can make the server read a file outside it.",
    )
    prompts: list[TokenIds] = Field(min_length=1, description="Each prompt's token ids, chat template applied.")
    n: int = Field(1, ge=1, description="Answers to each prompt.")
    temperature: float = Field(1.0, gt=0, le=2)
    max_tokens: int = Field(ge=1)
    seed: int | None = Field(
        None, ge=0, lt=2**32, description="The answers of prompt i are seeded from seed + i * n + their index."
    )


class RolloutAnswer(BaseModel):
    token_ids: list[int]
    """As sampled, the end-of-sequence token included when the answer ended."""
    ended: bool
    """False when the answer ran into ``max_tokens``."""


class RolloutResponse(BaseModel):
    active_version: str
    """The version the engine's weights held: the adapter was served over it, as its difference to it."""
    answers: list[RolloutAnswer]
    """``n`` per prompt, prompt by prompt."""
