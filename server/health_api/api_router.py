"""Liveness, readiness and Prometheus metrics: the endpoints an orchestrator and a scraper call.

They need no key, as load balancers and Prometheus carry none; they reveal no secret and no user data.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.dependencies import ChatServiceIfLoadedDep
from server.errors import error_response

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up and answering (the engine may still be loading)."""
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(chat: ChatServiceIfLoadedDep) -> dict[str, str] | Response:
    """The engine is loaded and this server serves the version the routing names (``VersionManager.unready_reason``
    says when it does not)."""
    if chat is None:
        return error_response(503, "The model is still loading.", code="engine_loading")
    if unready := chat.generation.versions.unready_reason():
        code, message = unready
        return error_response(503, message, code=code)
    return {"status": "ready"}


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus_metrics() -> Response:
    """Prometheus' text format, which the schema names as plain text."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
