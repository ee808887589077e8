"""HTTP routes of feedback: ``POST /v1/feedback`` (any key, on its own answers) and ``GET /v1/feedback/stats``
(admin key)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from feedback.stats import VersionStats, read_counters, version_stats
from server.dependencies import CallerDep, GesturesDep, RedisDep, get_admin
from server.feedback_api.protocol import FeedbackRequest, FeedbackResponse, RatingRequest
from server.unicode_body import UnicodeBodyRoute

router = APIRouter(route_class=UnicodeBodyRoute)


@router.post("/v1/feedback")
async def post_feedback(gesture: FeedbackRequest, caller: CallerDep, gestures: GesturesDep) -> FeedbackResponse:
    giver = caller.giver(gesture.user)
    if isinstance(gesture, RatingRequest):
        outcome = await gestures.rate(
            giver, gesture.completion_id, gesture.choice_index, gesture.rating, gesture.reason
        )
    else:
        outcome = await gestures.compare(
            giver,
            (gesture.chosen.completion_id, gesture.chosen.choice_index),
            (gesture.rejected.completion_id, gesture.rejected.choice_index),
        )
    return FeedbackResponse.of(gesture, outcome)


@router.get("/v1/feedback/stats", dependencies=[Depends(get_admin)])
async def get_stats(client: RedisDep) -> dict[str, object]:
    counters = await read_counters(client)
    data: list[VersionStats] = [version_stats(version, counts) for version, counts in counters.items()]
    return {"object": "list", "data": data}
