"""HTTP routes of feedback: ``POST /v1/feedback`` (any key, on its own answers) and ``GET /v1/feedback/stats``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from feedback.gestures import Gestures
from feedback.stats import VersionStats, read_counters, version_stats
from server.auth import Caller, require_admin, require_user
from server.feedback_api.protocol import ComparisonRequest, FeedbackResponse, RatingRequest

router = APIRouter()


def gestures(request: Request) -> Gestures:
    return request.app.state.gestures


def parse_gesture(payload: dict[str, Any]) -> RatingRequest | ComparisonRequest:
    """A body with ``chosen`` is a comparison, any other a rating: one clear error for each, not a union's two."""
    model = ComparisonRequest if "chosen" in payload else RatingRequest
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


@router.post("/v1/feedback")
async def post_feedback(
    request: Request, payload: dict[str, Any] = Body(...), caller: Caller = Depends(require_user)
) -> FeedbackResponse:
    gesture = parse_gesture(payload)
    if isinstance(gesture, RatingRequest):
        outcome = await gestures(request).rate(
            caller.key_id, gesture.user, gesture.completion_id, gesture.choice_index, gesture.rating, gesture.reason
        )
    else:
        outcome = await gestures(request).compare(
            caller.key_id,
            gesture.user,
            (gesture.chosen.completion_id, gesture.chosen.choice_index),
            (gesture.rejected.completion_id, gesture.rejected.choice_index),
        )
    return FeedbackResponse.of(gesture, outcome)


@router.get("/v1/feedback/stats")
async def get_stats(request: Request, _: Caller = Depends(require_admin)) -> dict[str, object]:
    counters = await read_counters(gestures(request).client)
    data: list[VersionStats] = [version_stats(version, counts) for version, counts in counters.items()]
    return {"object": "list", "data": data}
