"""FastAPI dependencies: who is calling, and the services the routes use.

Routes declare what they need with the ``Annotated`` aliases below and never read ``app.state``: this module is
the one place that does (``server/app.py`` fills it). A test replaces any dependency with
``app.dependency_overrides[get_gestures] = ...``; a route whose dependencies are all overridden needs neither the
app's lifespan nor the engine.

The functions are ``async`` though they await nothing: FastAPI runs a plain function dependency in a thread pool,
a thread hop on every request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypeVar

import redis.asyncio as aioredis
from fastapi import Depends, Request

from core.config import Settings
from feedback.gestures import Gestures
from server.accounts_api.serving import AccountService
from server.admin_api.serving import AdminService
from server.auth import Authenticator, Caller, require_admin
from server.chat_api.serving import ChatService
from server.completions_api.serving import CompletionService
from server.erasures import Erasures
from server.errors import ApiError
from server.identity.conversations import Conversations
from server.limits import ChatLimiter
from server.responses_api.serving import ResponseService
from server.rollouts_api.serving import RolloutService
from server.tokenize_api.serving import Tokenization
from server.versions.manager import VersionManager

Service = TypeVar("Service")


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_authenticator(request: Request) -> Authenticator:
    return request.app.state.auth


AuthenticatorDep = Annotated[Authenticator, Depends(get_authenticator)]


async def get_caller(request: Request, auth: AuthenticatorDep) -> Caller:
    """Any valid key, user or admin, or a signed-in person."""
    return await auth.caller(request)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_admin(caller: CallerDep) -> Caller:
    """The admin key only. Admin routers declare it once for all their routes; a route that records who acted
    takes it as a parameter too, and FastAPI computes it once per request."""
    return require_admin(caller)


AdminDep = Annotated[Caller, Depends(get_admin)]


async def get_chat_service_if_loaded(request: Request) -> ChatService | None:
    """None until the engine has loaded."""
    return request.app.state.chat


ChatServiceIfLoadedDep = Annotated[ChatService | None, Depends(get_chat_service_if_loaded)]


def _loaded(service: Service | None) -> Service:
    """A service of the engine, or a 503 while the engine loads."""
    if service is None:
        raise ApiError(503, "The model is still loading; retry in a few seconds.", code="engine_loading")
    return service


async def get_chat_service(service: ChatServiceIfLoadedDep) -> ChatService:
    return _loaded(service)


ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]


async def get_completion_service(request: Request) -> CompletionService:
    return _loaded(request.app.state.completions)


CompletionServiceDep = Annotated[CompletionService, Depends(get_completion_service)]


async def get_response_service(request: Request) -> ResponseService:
    return _loaded(request.app.state.responses)


ResponseServiceDep = Annotated[ResponseService, Depends(get_response_service)]


async def get_tokenization(request: Request) -> Tokenization:
    return _loaded(request.app.state.tokenization)


TokenizationDep = Annotated[Tokenization, Depends(get_tokenization)]


async def get_rollout_service(request: Request) -> RolloutService:
    return _loaded(request.app.state.rollouts)


RolloutServiceDep = Annotated[RolloutService, Depends(get_rollout_service)]


async def get_chat_limiter(request: Request) -> ChatLimiter:
    return request.app.state.chat_limiter


ChatLimiterDep = Annotated[ChatLimiter, Depends(get_chat_limiter)]


async def get_versions(request: Request) -> VersionManager | None:
    """The versions this server serves; None until the engine has loaded."""
    return request.app.state.versions


VersionsDep = Annotated[VersionManager | None, Depends(get_versions)]


async def get_gestures(request: Request) -> Gestures:
    return request.app.state.gestures


GesturesDep = Annotated[Gestures, Depends(get_gestures)]


async def get_admin_service(request: Request) -> AdminService:
    return request.app.state.admin


AdminServiceDep = Annotated[AdminService, Depends(get_admin_service)]


async def get_redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis


RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]


async def get_started_at(request: Request) -> int:
    """When this server started (Unix seconds): the ``created`` of the models it lists."""
    return request.app.state.started_at


StartedAtDep = Annotated[int, Depends(get_started_at)]


async def get_web_root(request: Request) -> Path:
    """The folder of the web pages (``client/web``)."""
    return request.app.state.web_root


WebRootDep = Annotated[Path, Depends(get_web_root)]


async def get_account_service(request: Request) -> AccountService:
    return request.app.state.accounts


AccountServiceDep = Annotated[AccountService, Depends(get_account_service)]


async def get_conversations(request: Request) -> Conversations:
    return request.app.state.identity.conversations


ConversationsDep = Annotated[Conversations, Depends(get_conversations)]


async def get_erasures(request: Request) -> Erasures:
    return request.app.state.erasures


ErasuresDep = Annotated[Erasures, Depends(get_erasures)]
