"""A property-based fuzz of every operation of the app's own OpenAPI schema: whatever a client sends, the server
answers without a 5xx, every refusal in OpenAI's error shape, and every answer with the content type and body its
schema documents. Three callers: the admin key (past every key check, so that bodies are read), a person signed in
on the chat page (the account and conversation routes), and nobody (the public routes, and auth before bodies).

The operations come from ``/openapi.json`` at collection, so a route added later is fuzzed without a change here.
The app is built as in test_routes.py, minus the engine (``create_app``, then ``attach_redis`` on the module's own
redis-server). schemathesis sends every request in process through its ASGI client, on one event loop of its own;
the async Redis client must live on that loop, so the app's lifespan, which would start the engine, is replaced by
one that only attaches Redis, and the client is entered once the redis-server is up.

The tokenize routes get a real tokenizer, the model's, loaded without the engine.
Without the engine, the chat route would refuse every request 503 engine_loading before reading its body (its
service dependency refuses first); a stand-in service that refuses only when the route uses it lets the fuzz reach
the body's validation, where malformed input could crash, while generation stays with test_chat_api.py. A 503
engine_loading is the one 5xx accepted: it is what a server without its engine must answer (``/ready`` too).

schemathesis checks left out, each noisy for a reason the fuzz cannot fix: status_code_conformance (FastAPI
documents a 422 that the server never sends, as validation errors are OpenAI's 400s, and no route documents its
400, 401, 403, 404, 409 or 429), negative_data_rejection (pydantic's lax mode accepts ``false`` for an integer and
``"1"`` for 1), positive_data_acceptance (rules the schema cannot state, as an account name's characters or a
choice index beyond an answer's choices, are 400s by design), and unsupported_method and allow_header_conformance
(the web pages' StaticFiles mount at ``/`` answers any method an API path lacks: 404 to a GET, 405 with ``Allow:
GET, HEAD`` to the rest); not_a_server_error is replaced by the check below, which knows the engine is absent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import NoReturn

import hypothesis
import pytest
import redis
import redis.asyncio as aioredis
import schemathesis
from fastapi import FastAPI
from schemathesis.core.transport import Response
from schemathesis.python.asgi import ASGIClient, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)
from transformers import AutoTokenizer

from core.config import Settings
from core.local_redis import start_local_redis
from server.app import attach_redis, create_app
from server.dependencies import get_chat_service, get_tokenization
from server.errors import ApiError
from server.identity.sessions import COOKIE
from server.tokenize_api.serving import Tokenization
from tests.helpers import REPO

pytestmark = pytest.mark.integration

ADMIN_KEY = "sk-fuzz-admin"
PERSON = "fuzz-person-with-a-long-name"
"""Long enough that the admin's fuzz never deletes or changes it by chance."""
ERROR_FIELDS = {"message", "type", "param", "code"}
CHECKS = [response_schema_conformance, content_type_conformance, response_headers_conformance]
FUZZ = hypothesis.settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.filter_too_much],
)
"""25 examples per operation and caller keep the module near half a minute on two cores."""


class LoadingChatService:
    """The chat service as a route sees it once the body is validated and the request admitted: whatever the
    route asks of it, it refuses as the server does while the engine loads."""

    def __getattr__(self, name: str) -> NoReturn:
        raise ApiError(503, "The model is still loading; retry in a few seconds.", code="engine_loading")


async def loading_chat_service() -> LoadingChatService:
    return LoadingChatService()


def fuzzed_app() -> FastAPI:
    settings = Settings(_env_file=None, admin_key=ADMIN_KEY)
    app = create_app(settings)
    app.dependency_overrides[get_chat_service] = loading_chat_service
    tokenizer = AutoTokenizer.from_pretrained(REPO / settings.model_path)
    tokenization = Tokenization(tokenizer, settings, vocab_size=len(tokenizer))
    app.dependency_overrides[get_tokenization] = lambda: tokenization
    return app


APP = fuzzed_app()
CLIENT = ASGIClient(APP)
"""Entered by the fixture only: entering starts the app's lifespan, replaced there by ``redis_lifespan``."""
schema = schemathesis.openapi.from_dict(CLIENT.get("/openapi.json").json())
schema.app = APP


def redis_lifespan(redis_url: str) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan minus the engine and the periodic tasks: Redis, on the loop the requests run on."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = aioredis.from_url(redis_url)
        store = redis.Redis.from_url(redis_url)
        attach_redis(app, client, store)
        try:
            yield
        finally:
            await client.aclose()
            store.close()

    return lifespan


def _admin(request: str, path: str, **kwargs: object) -> dict:
    response = CLIENT.request(request, path, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def _sign_in_person() -> str:
    """A session of a new account, through the admin's one-time link as a person would get it."""
    link = _admin("POST", "/v1/admin/users", json={"name": PERSON})["link"]
    response = CLIENT.post("/v1/auth/link", json={"token": link.partition("#signin=")[2]})
    assert response.status_code == 200, response.text
    return response.cookies[COOKIE]


@pytest.fixture(scope="module")
def person_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app on the module's redis-server, and a signed-in person's session."""
    local = start_local_redis(tmp_path_factory.mktemp("fuzz-redis"))
    APP.router.lifespan_context = redis_lifespan(local.url)
    try:
        with CLIENT:
            yield _sign_in_person()
    finally:
        shutdown_lifespans()
        local.stop()


def send(case: schemathesis.Case, headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None) -> None:
    """Send ``case`` with the caller's credentials only (no cookie a previous answer set) and check the answer."""
    CLIENT.cookies.clear()
    response = case.call(session=CLIENT, headers=headers, cookies=cookies)
    assert response.status_code < 500 or _engine_loading(response), _described(case, response)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == ERROR_FIELDS, _described(case, response)
    case.validate_response(response, checks=CHECKS)


def _engine_loading(response: Response) -> bool:
    return response.status_code == 503 and response.json()["error"]["code"] == "engine_loading"


def _described(case: schemathesis.Case, response: Response) -> str:
    return f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"


@schema.parametrize()
@FUZZ
def test_every_operation_with_the_admin_key(case: schemathesis.Case, person_session: str) -> None:
    send(case, headers={"Authorization": f"Bearer {ADMIN_KEY}"})


@schema.exclude(path="/v1/auth/signout").parametrize()
@FUZZ
def test_every_operation_signed_in_as_a_person(case: schemathesis.Case, person_session: str) -> None:
    """Signing out would end the session that the rest of this run uses; the other callers fuzz it."""
    send(case, cookies={COOKIE: person_session})


@schema.parametrize()
@FUZZ
def test_every_operation_without_credentials(case: schemathesis.Case, person_session: str) -> None:
    send(case)
