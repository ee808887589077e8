"""The FastAPI application: wiring of Redis, the engine and the routes, and their start and stop.

The engine loads in the background after the app starts answering, so ``/health`` is up at once and ``/ready``
turns true when the model can serve (what an orchestrator's probes need); until then chat requests get a 503.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from core.config import Settings
from core.local_redis import LocalRedis, start_local_redis
from feedback.records import CompletionStore
from feedback.store import FeedbackStore
from server import health_api, models_api
from server.chat import api_router as chat_api
from server.chat.serving import ChatService
from server.engine import build_engine, keep_off_engine_cores
from server.errors import install_error_handlers
from server.feedback import api_router as feedback_api
from server.metrics import MetricsMiddleware

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 2.0
WEB_UI = Path(__file__).resolve().parent.parent / "client" / "web"


async def _load_engine(app: FastAPI, settings: Settings) -> None:
    try:
        app.state.engine = await asyncio.to_thread(build_engine, settings)
        keep_off_engine_cores()
        app.state.chat = ChatService(app.state.engine, settings, app.state.feedback)
    except Exception:
        log.critical("engine failed to start; shutting down", exc_info=True)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    log.info("engine ready", extra={"model": str(settings.model_path)})


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    local: LocalRedis | None = None
    redis_url = settings.redis_url
    if redis_url is None:
        local = start_local_redis(settings.redis_dir)
        redis_url = local.url
    client = aioredis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
    records = CompletionStore(client, retention_s=settings.record_retention_days * 86400)
    app.state.feedback = FeedbackStore(client, records, settings)
    loader = asyncio.create_task(_load_engine(app, settings))
    try:
        yield
    finally:
        loader.cancel()
        if app.state.engine is not None:
            app.state.engine.shutdown()
        await client.aclose()
        if local is not None:
            local.stop()


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="chatloop", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.started_at = int(time.time())
    app.state.engine = None
    app.state.chat = None
    app.add_middleware(MetricsMiddleware)
    install_error_handlers(app)
    for module in (chat_api, feedback_api, models_api, health_api):
        app.include_router(module.router)
    app.mount("/", StaticFiles(directory=WEB_UI, html=True), name="web")  # last: the API routes win
    return app
