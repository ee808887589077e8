"""Request and response types of ``/v1/feedback``: a rating of one answer, or a comparison of two.

Unknown fields are refused here (unlike chat requests): a misspelt field in a gesture would silently change its
meaning, and no SDK sends newer fields to this endpoint. The body is one or the other shape (``FeedbackRequest``),
told apart by the presence of ``chosen``, so that a bad body gets the errors of the shape that was meant rather
than a union's two sets.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

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


def _gesture_shape(body: Any) -> str | None:
    """A body with ``chosen`` is a comparison, any other object a rating; anything else is no gesture at all."""
    if isinstance(body, dict):
        return ComparisonRequest.__name__ if "chosen" in body else RatingRequest.__name__
    if isinstance(body, RatingRequest | ComparisonRequest):
        return type(body).__name__
    return None


# The tags are the shapes' class names: server/errors.py leaves them out of the field an error names.
FeedbackRequest = Annotated[
    Annotated[RatingRequest, Tag(RatingRequest.__name__)]
    | Annotated[ComparisonRequest, Tag(ComparisonRequest.__name__)],
    Discriminator(_gesture_shape, custom_error_type="dict_type"),
]


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
    """Pairs left out of the training data because this user or principal reached the hourly quota."""
    pairs_ineligible: list[str] = []
    """Why pairs the gesture made are not training data (constrained decoding, a pinned version, a principal not
    allowed to teach); the gesture itself is stored and counted."""

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
            pairs_ineligible=outcome.ineligible,
        )
