"""The FastAPI application: wiring of Redis, the engine and the routes, and their start and stop.

The engine loads in the background after the app starts answering, so ``/health`` is up at once and ``/ready``
turns true when the model can serve (what an orchestrator's probes need); until then chat requests get a 503.
The services live in ``app.state``, which the routes reach through ``server/dependencies.py``: a test that builds
the app with ``create_app`` and no lifespan either hands it its own Redis (``attach_redis``) or overrides the
dependencies its routes use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import redis
import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry
from vllm.utils.gc_utils import freeze_gc_heap

from core.config import Settings
from core.errors import Contended
from core.keyed_ids import KeyedIds, load_secret
from core.local_redis import LocalRedis, start_local_redis
from feedback.access import AnswerAccess
from feedback.erasure import Erasure
from feedback.gestures import Gestures
from feedback.records import CompletionRecords
from feedback.retention import trim_streams
from feedback.stats import snapshot_counters
from server.accounts_api import api_router as accounts_api
from server.accounts_api.serving import AccountService
from server.admin_api import api_router as admin_api
from server.admin_api.serving import AdminService
from server.answers.generation import Generation
from server.answers.recording import AnswerRecorder
from server.auth import Authenticator
from server.body_limit import BodyLimitMiddleware
from server.chat_api import api_router as chat_api
from server.chat_api.serving import ChatService
from server.completions_api import api_router as completions_api
from server.completions_api.serving import CompletionService
from server.conversations_api import api_router as conversations_api
from server.cpu.pinning import keep_off_engine_cores
from server.engine import build_engine
from server.erasures import Erasures
from server.errors import install_error_handlers
from server.feedback_api import api_router as feedback_api
from server.health_api import api_router as health_api
from server.identity.signin import SigninAttempts
from server.identity.stores import Identity
from server.limits import ChatLimiter
from server.loop_watchdog import LoopWatchdog
from server.metrics import MetricsMiddleware
from server.models_api import api_router as models_api
from server.responses_api import api_router as responses_api
from server.responses_api.serving import ResponseService
from server.rollouts_api import api_router as rollouts_api
from server.rollouts_api.serving import RolloutService
from server.security_headers import SecurityHeadersMiddleware
from server.tokenize_api import api_router as tokenize_api
from server.tokenize_api.serving import Tokenization
from server.versions import autopilot
from server.versions.loaded import LoadedVersions
from server.versions.manager import VersionManager
from server.versions.weights import remove_stale_builds

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 2.0
RECONNECT = (ExponentialBackoff(cap=0.5, base=0.05), 2, (RedisConnectionError,))
"""redis-py's retry: twice more, on a dropped connection only, after 100 and 200 ms."""
STATS_SNAPSHOT_S = 60.0
RETENTION_TRIM_S = 3600.0
WEB_UI = Path(__file__).resolve().parent.parent / "client" / "web"


async def _load_engine(app: FastAPI, settings: Settings, client: aioredis.Redis) -> None:
    try:
        app.state.engine = await asyncio.to_thread(build_engine, settings)
        keep_off_engine_cores()
        loaded = LoadedVersions(app.state.engine, settings)
        if removed := remove_stale_builds(loaded.cache, time.time()):
            log.warning("removed builds a killed process left", extra={"folders": [path.name for path in removed]})
        versions = VersionManager(loaded, client, settings, app.state.ids)
        await _first_reconcile(versions)
        app.state.versions = versions
        generation = Generation(app.state.engine, settings, AnswerRecorder(app.state.gestures), versions)
        app.state.chat = ChatService(generation)
        app.state.responses = ResponseService(app.state.chat, app.state.gestures.records)
        vocab_size = app.state.engine.model_config.get_vocab_size()
        app.state.completions = CompletionService(generation, vocab_size)
        app.state.rollouts = RolloutService(app.state.engine, versions.loaded, settings, vocab_size)
        app.state.tokenization = Tokenization(app.state.chat.tokenizer, settings, vocab_size)
        # As vLLM's own server does: importing torch and vLLM leaves ~600,000 objects that a full collection
        # walks in 0.35 s, a pause for every request in flight; frozen, the collector never looks at them again.
        freeze_gc_heap()
    except Exception:
        log.critical("engine failed to start; shutting down", exc_info=True)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    log.info("engine ready", extra={"model": str(settings.model_path), "active": versions.routing.active})
    await versions.run()


async def _first_reconcile(versions: VersionManager) -> None:
    """Load what the registry routes to before declaring the server ready; without Redis, start on the base
    model and let the reconcile loop catch up."""
    try:
        await versions.reconcile()
    except RedisError:
        log.warning("registry unreachable at start; serving the base model until it is back")


async def _every(seconds: float, name: str, work: Callable[..., Awaitable[object]], *args: object) -> None:
    """Run ``work`` every ``seconds`` until cancelled; Redis being away, or others' writes winning every try, only
    skips a turn."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await work(*args)
        except (RedisError, OSError):
            log.warning("periodic task skipped: Redis unreachable", extra={"task": name})
        except Contended as exc:
            log.warning("periodic task skipped: %s", exc.message, extra={"task": name})


def attach_redis(app: FastAPI, client: aioredis.Redis, registry_client: redis.Redis) -> None:
    """The services that need Redis alone, from an async client and a sync one (the registry's transactions run
    in threads)."""
    settings: Settings = app.state.settings
    app.state.redis = client
    ids: KeyedIds = app.state.ids
    retention_s = settings.record_retention_days * 86400
    records = CompletionRecords(client, retention_s, ids, max(retention_s, settings.event_retention_days * 86400))
    app.state.gestures = Gestures(client, records, AnswerAccess(client, settings, ids), settings)
    app.state.admin = AdminService(registry_client, client, lambda: app.state.versions)
    app.state.identity = Identity.of(client, settings)
    app.state.auth = Authenticator(settings, app.state.identity)
    app.state.chat_limiter = ChatLimiter(client, settings)
    attempts = SigninAttempts(client, settings.accounts)
    app.state.accounts = AccountService(app.state.identity, attempts, app.state.auth, settings)
    app.state.erasures = Erasures(client, app.state.identity, app.state.auth, ids, Erasure(registry_client))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    local: LocalRedis | None = None
    redis_url = settings.redis_url
    if redis_url is None:
        local = start_local_redis(settings.redis_dir, settings.local_redis_maxmemory_mb)
        local.keep_running()
        redis_url = local.url
    # A client made from a URL retries nothing; a connection that Redis dropped (a restart, an idle timeout) then
    # fails the one command that found it, and a chat would go unlimited for it. Retried on a fresh connection,
    # that command succeeds. A timeout is not retried: Redis is then slow or gone, and the caller's fallback acts.
    timeouts = {"socket_timeout": REDIS_TIMEOUT_S, "socket_connect_timeout": REDIS_TIMEOUT_S}
    client = aioredis.from_url(redis_url, retry=AsyncRetry(*RECONNECT), **timeouts)
    registry_client = redis.Redis.from_url(redis_url, retry=Retry(*RECONNECT), **timeouts)
    attach_redis(app, client, registry_client)
    period = settings.rollout.reconcile_seconds
    tasks = [
        asyncio.create_task(_load_engine(app, settings, client)),
        asyncio.create_task(_every(period, "autopilot", autopilot.check, registry_client, client, settings.rollout)),
        asyncio.create_task(_every(STATS_SNAPSHOT_S, "stats snapshot", snapshot_counters, client, STATS_SNAPSHOT_S)),
        asyncio.create_task(_every(RETENTION_TRIM_S, "retention", trim_streams, client, settings, RETENTION_TRIM_S)),
        asyncio.create_task(LoopWatchdog(settings.loop_stall_s).tick()),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        if app.state.engine is not None:
            app.state.engine.shutdown()
        await client.aclose()
        registry_client.close()
        if local is not None:
            local.stop()


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="chatloop", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.ids = KeyedIds(load_secret(settings))
    app.state.started_at = int(time.time())
    app.state.engine = None
    app.state.chat = None
    app.state.rollouts = None
    app.state.tokenization = None
    app.state.responses = None
    app.state.completions = None
    app.state.versions = None
    app.add_middleware(BodyLimitMiddleware, max_body_mb=settings.max_body_mb)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware)  # added last, so outermost: it counts the limit's 413s too
    install_error_handlers(app)
    app.state.web_root = WEB_UI
    for router in (
        chat_api.router,
        responses_api.router,
        completions_api.router,
        feedback_api.router,
        admin_api.router,
        admin_api.page,
        rollouts_api.router,
        accounts_api.auth,
        accounts_api.account,
        accounts_api.admin,
        conversations_api.router,
        models_api.router,
        tokenize_api.router,
        health_api.router,
    ):
        app.include_router(router)
    app.mount("/", StaticFiles(directory=WEB_UI, html=True), name="web")  # last: the API routes win
    return app
