"""Request and response types of ``/v1/feedback``: a rating of one answer, or a comparison of two.

Unknown fields are refused here (unlike chat requests): a misspelt field in a gesture would silently change its
meaning, and no SDK sends newer fields to this endpoint.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from feedback.gestures import Outcome
from feedback.pairs import Pair

CompletionId = Field(min_length=1, max_length=128)
UserField = Field(None, max_length=256, description="The `user` the completion was requested with, if any.")


class RatingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    completion_id: str = CompletionId
    choice_index: int = Field(0, ge=0)
    rating: Literal["up", "down"] | None
    """``null`` clears the rating."""
    reason: str | None = Field(None, max_length=2000)
    user: str | None = UserField


class AnswerPointer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    completion_id: str = CompletionId
    choice_index: int = Field(0, ge=0)


class ComparisonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chosen: AnswerPointer
    rejected: AnswerPointer
    user: str | None = UserField


class PairSummary(BaseModel):
    pair_id: str
    rule: str
    weight: float
    chosen: AnswerPointer
    rejected: AnswerPointer

    @classmethod
    def of(cls, pair: Pair) -> PairSummary:
        return cls(
            pair_id=pair.pair_id,
            rule=pair.rule,
            weight=pair.weight,
            chosen=AnswerPointer(completion_id=pair.chosen.completion_id, choice_index=pair.chosen.choice_index),
            rejected=AnswerPointer(completion_id=pair.rejected.completion_id, choice_index=pair.rejected.choice_index),
        )


class FeedbackResponse(BaseModel):
    """What was stored: the event's id, the gesture as understood, and the pairs it produced."""

    id: str
    object: Literal["feedback"] = "feedback"
    type: Literal["rating", "comparison"]
    rating: RatingRequest | None = None
    comparison: ComparisonRequest | None = None
    pairs: list[PairSummary]
    pairs_capped: int
    """Pairs left out of the training data because this user reached the hourly quota."""

    @classmethod
    def of(cls, gesture: RatingRequest | ComparisonRequest, outcome: Outcome) -> FeedbackResponse:
        is_rating = isinstance(gesture, RatingRequest)
        return cls(
            id=outcome.event_id,
            type="rating" if is_rating else "comparison",
            rating=gesture if is_rating else None,
            comparison=None if is_rating else gesture,
            pairs=[PairSummary.of(pair) for pair in outcome.pairs],
            pairs_capped=outcome.capped,
        )
