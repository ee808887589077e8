"""People and keys, in-process against a real Redis and without the engine: the first admin's link, signing in and
out, joining, sessions as cookies, same-origin writes, an account as the ``user`` of its answers, conversations kept
per account, personal and managed API keys, and revocation across two replicas."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
import redis

from core.config import Settings
from feedback.records import CompletionRecords
from server.identity.first_admin import FIRST_ADMIN, first_admin_link
from server.identity.sessions import COOKIE
from tests.factories import completion_record
from tests.helpers import IDS, SECRET_KEY, InProcess, in_process, run_async

pytestmark = pytest.mark.integration

ADMIN_KEY = "sk-accounts-admin"
USER_KEY = "sk-accounts-user"
ORIGIN = "http://test"
SAME_SITE = {"Origin": ORIGIN}
PASSWORD = "correct horse battery"
RECONCILE_S = 0.5
ERROR_FIELDS = {"message", "type", "param", "code"}

Scenario = Callable[[InProcess], Awaitable[None]]


def settings_for(redis_url: str, **accounts: object) -> Settings:
    return Settings(
        _env_file=None,
        redis_url=redis_url,
        api_keys=[USER_KEY],
        admin_key=ADMIN_KEY,
        secret_key=SECRET_KEY,
        accounts={"signin_per_minute_account": 5, "max_conversations": 3, "conversation_kb": 4, **accounts},
        rollout={"reconcile_seconds": RECONCILE_S},
    )


@pytest.fixture
def run(redis_url: str) -> Callable[..., None]:
    """Run a scenario on an empty Redis; keyword arguments set ``ACCOUNTS`` settings."""
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()

    async def go(scenario: Scenario, accounts: dict) -> None:
        async with in_process(settings_for(redis_url, **accounts), ORIGIN) as app:
            await scenario(app)

    return lambda scenario, **accounts: run_async(go(scenario, accounts))


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_FIELDS, body
    return body["error"]


def admin(http: httpx.AsyncClient, method: str, path: str, **kwargs: object) -> Awaitable[httpx.Response]:
    return http.request(method, path, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, **kwargs)


async def add_person(app: InProcess, name: str, role: str = "user") -> str:
    """A new account, signed in on a fresh cookie jar through the link an admin got; returns the link's token."""
    made = await admin(app.http, "POST", "/v1/admin/users", json={"name": name, "role": role})
    assert made.status_code == 200, made.text
    link = made.json()["link"]
    assert link.startswith(f"{ORIGIN}/#signin=")
    return link.split("#signin=")[1]


async def browser(app: InProcess, token: str) -> httpx.AsyncClient:
    """A separate cookie jar (a person's browser) signed in with a one-time link."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app), base_url=ORIGIN, headers=SAME_SITE)
    response = await http.post("/v1/auth/link", json={"token": token})
    assert response.status_code == 200, response.text
    return http


async def answer_for(app: InProcess, account: str) -> str:
    """An answer recorded as the chat route records one for a signed-in person."""
    record = completion_record(["An answer."], key_id=f"account:{account}", user=account)
    await CompletionRecords(app.client, 3600, IDS).save(record)
    return record.id


# ---- the first admin ---------------------------------------------------------------------------------------


def test_the_first_admin_link_signs_in_once_and_stops_once_claimed(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        identity = app.app.state.identity
        token = await first_admin_link(identity)
        assert token is not None
        response = await app.http.post("/v1/auth/link", json={"token": token}, headers=SAME_SITE)
        assert response.status_code == 200, response.text
        cookie = response.headers["set-cookie"]
        assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert response.json()["account"] == {**response.json()["account"], "name": FIRST_ADMIN, "role": "admin"}
        assert (await app.http.get("/v1/admin/versions")).status_code == 200  # an admin's session reaches ops
        error = error_of(await app.http.post("/v1/auth/link", json={"token": token}, headers=SAME_SITE), 401)
        assert error["code"] == "invalid_link"
        assert await first_admin_link(identity) is None

    run(scenario)


def test_an_unclaimed_first_admin_gets_a_fresh_link_at_each_start(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        identity = app.app.state.identity
        first, second = await first_admin_link(identity), await first_admin_link(identity)
        assert first and second and first != second
        assert [a.name for a in await identity.accounts.list()] == [FIRST_ADMIN]

    run(scenario)


# ---- signing in and out ------------------------------------------------------------------------------------


def test_password_sign_in_sign_out_and_wrong_passwords(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        alice = await browser(app, await add_person(app, "alice"))
        set_pw = await alice.post("/v1/account/password", json={"new_password": PASSWORD})
        assert set_pw.status_code == 200 and set_pw.json()["has_password"] is True
        change = await alice.post("/v1/account/password", json={"current_password": "nope", "new_password": "x" * 9})
        assert error_of(change, 400)["param"] == "current_password"
        assert (await alice.post("/v1/auth/signout")).status_code == 200
        assert (await alice.get("/v1/auth/session")).json()["account"] is None
        assert error_of(await alice.get("/v1/models"), 401)["code"] == "missing_api_key"

        wrong = await alice.post("/v1/auth/signin", json={"name": "alice", "password": "wrong password"})
        assert error_of(wrong, 401)["code"] == "invalid_credentials"
        nobody = await alice.post("/v1/auth/signin", json={"name": "nobody", "password": "wrong password"})
        assert error_of(nobody, 401)["message"] == error_of(wrong, 401)["message"]
        right = await alice.post("/v1/auth/signin", json={"name": "alice", "password": PASSWORD})
        assert right.status_code == 200 and right.json()["account"]["name"] == "alice"
        assert (await alice.get("/v1/models")).status_code == 200
        assert error_of(await alice.get("/v1/admin/versions"), 403)["code"] == "admin_key_required"

    run(scenario)


def test_a_signed_out_cookie_stops_working_at_once(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        bob = await browser(app, await add_person(app, "bob"))
        stolen = bob.cookies[COOKIE]
        await bob.post("/v1/auth/signout")
        app.http.cookies.set(COOKIE, stolen)
        thief = await app.http.get("/v1/models")
        assert error_of(thief, 401)["code"] == "session_expired"

    run(scenario)


def test_sign_in_attempts_are_limited_per_account_before_the_password_is_checked(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        carol = await browser(app, await add_person(app, "carol"))
        await carol.post("/v1/account/password", json={"new_password": PASSWORD})
        statuses = [
            (await app.http.post("/v1/auth/signin", json={"name": "carol", "password": f"guess {i}"})).status_code
            for i in range(5)
        ]
        assert statuses == [401] * 5
        refused = await app.http.post("/v1/auth/signin", json={"name": "carol", "password": PASSWORD})
        assert error_of(refused, 429)["code"] == "signin_rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60

    run(scenario)


def test_a_cookie_write_from_another_origin_is_refused(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        dave = await browser(app, await add_person(app, "dave"))
        mine = await answer_for(app, "dave")
        rating = {"completion_id": mine, "choice_index": 0, "rating": "up"}
        forged = await dave.post("/v1/feedback", json=rating, headers={"Origin": "http://evil.example"})
        assert error_of(forged, 403)["code"] == "cross_origin"
        cross_site = await dave.post(
            "/v1/feedback", json=rating, headers={"Origin": "", "Sec-Fetch-Site": "cross-site"}
        )
        assert cross_site.status_code == 403
        login_csrf = await app.http.post(
            "/v1/auth/signin", json={"name": "dave", "password": PASSWORD}, headers={"Origin": "http://evil.example"}
        )
        assert error_of(login_csrf, 403)["code"] == "cross_origin"
        assert (await dave.post("/v1/feedback", json=rating)).status_code == 200

    run(scenario)


# ---- joining -----------------------------------------------------------------------------------------------


def test_closed_joining_refuses_strangers(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        assert (await app.http.get("/v1/auth/session")).json() == {"account": None, "joining": "closed"}
        refused = await app.http.post("/v1/auth/signup", json={"name": "eve", "password": PASSWORD}, headers=SAME_SITE)
        assert error_of(refused, 403)["code"] == "joining_closed"

    run(scenario)


def test_approval_joining_waits_for_an_admin(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        asked = await app.http.post("/v1/auth/signup", json={"name": "frank", "password": PASSWORD}, headers=SAME_SITE)
        assert asked.status_code == 202 and asked.json()["account"]["status"] == "pending"
        assert COOKIE not in asked.cookies
        early = await app.http.post("/v1/auth/signin", json={"name": "frank", "password": PASSWORD}, headers=SAME_SITE)
        assert error_of(early, 403)["code"] == "account_pending"
        approved = await admin(app.http, "POST", "/v1/admin/users/frank/approve")
        assert approved.status_code == 200 and approved.json()["status"] == "active"
        later = await app.http.post("/v1/auth/signin", json={"name": "frank", "password": PASSWORD}, headers=SAME_SITE)
        assert later.status_code == 200

    run(scenario, joining="approval")


def test_open_joining_signs_the_newcomer_in_and_names_are_checked(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        joined = await app.http.post("/v1/auth/signup", json={"name": "gina", "password": PASSWORD}, headers=SAME_SITE)
        assert joined.status_code == 200 and COOKIE in joined.cookies
        again = await app.http.post("/v1/auth/signup", json={"name": "gina", "password": PASSWORD}, headers=SAME_SITE)
        assert error_of(again, 409)["code"] == "account_exists"
        bad = await app.http.post("/v1/auth/signup", json={"name": "Gina!", "password": PASSWORD}, headers=SAME_SITE)
        assert error_of(bad, 400)["param"] == "name"
        short = await app.http.post("/v1/auth/signup", json={"name": "hank", "password": "short"}, headers=SAME_SITE)
        assert error_of(short, 400)["param"] == "password"

    run(scenario, joining="open")


# ---- the account is the user ---------------------------------------------------------------------------------


def test_a_person_rates_only_their_own_answers_whatever_user_they_claim(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        ivy = await browser(app, await add_person(app, "ivy"))
        jack = await browser(app, await add_person(app, "jack"))
        ivys = await answer_for(app, "ivy")
        claim = {"completion_id": ivys, "choice_index": 0, "rating": "down", "user": "jack"}
        assert (await ivy.post("/v1/feedback", json=claim)).status_code == 200
        assert error_of(await jack.post("/v1/feedback", json={**claim, "user": "ivy"}), 404)["param"] == "completion_id"
        shared_key = {"Authorization": f"Bearer {USER_KEY}"}
        as_key = await app.http.post("/v1/feedback", json={**claim, "user": "ivy"}, headers=shared_key)
        assert as_key.status_code == 404

    run(scenario)


# ---- conversations -----------------------------------------------------------------------------------------


def test_conversations_follow_the_account_and_no_one_else_sees_them(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        kim = await browser(app, await add_person(app, "kim"))
        kim_elsewhere = await browser(
            app, (await admin(app.http, "POST", "/v1/admin/users/kim/link")).json()["link"].split("#signin=")[1]
        )
        lee = await browser(app, await add_person(app, "lee"))
        body = {"title": "Fruit", "messages": [{"role": "user", "content": "Name a fruit."}]}
        assert (await kim.put("/v1/conversations/c1", json=body)).status_code == 200
        listed = (await kim_elsewhere.get("/v1/conversations")).json()["data"]
        assert [(c["id"], c["title"]) for c in listed] == [("c1", "Fruit")]
        assert (await kim_elsewhere.get("/v1/conversations/c1")).json()["messages"] == body["messages"]
        assert (await kim.patch("/v1/conversations/c1", json={"title": "Fruits"})).json()["title"] == "Fruits"
        assert (await lee.get("/v1/conversations")).json()["data"] == []
        assert error_of(await lee.get("/v1/conversations/c1"), 404)["code"] == "conversation_not_found"
        assert error_of(await lee.delete("/v1/conversations/c1"), 404)["code"] == "conversation_not_found"
        keyed = await app.http.get("/v1/conversations", headers={"Authorization": f"Bearer {USER_KEY}"})
        assert error_of(keyed, 403)["code"] == "account_required"
        huge = {"title": "Big", "messages": [{"role": "user", "content": "x" * 5000}]}
        assert error_of(await kim.put("/v1/conversations/c2", json=huge), 400)["code"] == "conversation_too_large"
        for name in ("c2", "c3"):
            assert (await kim.put(f"/v1/conversations/{name}", json=body)).status_code == 200
        assert error_of(await kim.put("/v1/conversations/c4", json=body), 409)["code"] == "too_many_conversations"
        assert (await kim.delete("/v1/conversations/c1")).status_code == 204
        assert [c["id"] for c in (await kim.get("/v1/conversations")).json()["data"]] == ["c3", "c2"]

    run(scenario)


# ---- keys --------------------------------------------------------------------------------------------------


def test_a_managed_key_is_shown_once_works_and_is_refused_once_revoked(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        made = await admin(app.http, "POST", "/v1/admin/keys", json={"name": "app-1", "chat_per_minute": 5})
        assert made.status_code == 200, made.text
        secret = made.json()["key"]
        assert secret.startswith("sk-cl-")
        listed = await admin(app.http, "GET", "/v1/admin/keys")
        assert secret not in listed.text and [k["name"] for k in listed.json()["data"]] == ["app-1"]
        assert secret not in app.store.execute_command("DUMP", "chatloop:api-keys").decode("latin-1")
        bearer = {"Authorization": f"Bearer {secret}"}
        assert (await app.http.get("/v1/models", headers=bearer)).status_code == 200
        twin = await admin(app.http, "POST", "/v1/admin/keys", json={"name": "app-1"})
        assert error_of(twin, 409)["code"] == "api_key_exists"
        assert (await admin(app.http, "DELETE", "/v1/admin/keys/app-1")).status_code == 204
        assert error_of(await app.http.get("/v1/models", headers=bearer), 401)["code"] == "invalid_api_key"
        user_key = await app.http.post(
            "/v1/admin/keys", json={"name": "x"}, headers={"Authorization": f"Bearer {USER_KEY}"}
        )
        assert error_of(user_key, 403)["code"] == "admin_key_required"

    run(scenario)


def test_an_expired_key_is_refused(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        made = await admin(app.http, "POST", "/v1/admin/keys", json={"name": "brief", "expires_at": time.time() + 1})
        bearer = {"Authorization": f"Bearer {made.json()['key']}"}
        assert (await app.http.get("/v1/models", headers=bearer)).status_code == 200
        await asyncio.sleep(1.1)
        assert error_of(await app.http.get("/v1/models", headers=bearer), 401)["code"] == "invalid_api_key"

    run(scenario)


def test_a_revocation_reaches_another_replica_within_the_reconcile_period(redis_url: str) -> None:
    async def scenario() -> None:
        settings = settings_for(redis_url)
        async with in_process(settings, ORIGIN) as one, in_process(settings, ORIGIN) as two:
            secret = (await admin(one.http, "POST", "/v1/admin/keys", json={"name": "roaming"})).json()["key"]
            bearer = {"Authorization": f"Bearer {secret}"}
            assert (await two.http.get("/v1/models", headers=bearer)).status_code == 200  # now cached by two
            await admin(one.http, "DELETE", "/v1/admin/keys/roaming")
            deadline = time.monotonic() + RECONCILE_S + 1
            while (await two.http.get("/v1/models", headers=bearer)).status_code == 200:
                assert time.monotonic() < deadline, "the other replica still takes a revoked key"
                await asyncio.sleep(0.05)

    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    run_async(scenario())


def test_a_personal_key_speaks_for_its_account_and_cannot_make_keys(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        mia = await browser(app, await add_person(app, "mia"))
        made = await mia.post("/v1/account/keys", json={"name": "laptop"})
        assert made.status_code == 200 and made.json()["owner"] == "mia"
        bearer = {"Authorization": f"Bearer {made.json()['key']}"}
        mias = await answer_for(app, "mia")
        rating = {"completion_id": mias, "choice_index": 0, "rating": "up", "user": "someone-else"}
        assert (await app.http.post("/v1/feedback", json=rating, headers=bearer)).status_code == 200
        more = await app.http.post("/v1/account/keys", json={"name": "more"}, headers=bearer)
        assert error_of(more, 403)["code"] == "account_required"
        assert [k["name"] for k in (await mia.get("/v1/account/keys")).json()["data"]] == ["laptop"]
        assert (await mia.delete("/v1/account/keys/laptop")).status_code == 204
        assert (await app.http.get("/v1/models", headers=bearer)).status_code == 401

    run(scenario)


def test_removing_an_account_ends_its_sessions_keys_and_conversations(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        ned = await browser(app, await add_person(app, "ned"))
        secret = (await ned.post("/v1/account/keys", json={"name": "k"})).json()["key"]
        await ned.put("/v1/conversations/c1", json={"title": "t", "messages": []})
        assert (await admin(app.http, "DELETE", "/v1/admin/users/ned")).status_code == 204
        assert (await ned.get("/v1/models")).status_code == 401
        assert (await app.http.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})).status_code == 401
        assert not app.store.exists("chatloop:conversations:ned")
        listed = (await admin(app.http, "GET", "/v1/admin/users")).json()["data"]
        assert "ned" not in [a["name"] for a in listed]

    run(scenario)


def test_no_secret_reaches_the_logs(run: Callable[..., None], caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(app: InProcess) -> None:
        token = await add_person(app, "olga")
        olga = await browser(app, token)
        await olga.post("/v1/account/password", json={"new_password": PASSWORD})
        secret = (await olga.post("/v1/account/keys", json={"name": "k"})).json()["key"]
        await app.http.post("/v1/auth/signin", json={"name": "olga", "password": "a wrong one"}, headers=SAME_SITE)
        made = await admin(app.http, "POST", "/v1/admin/keys", json={"name": "logged-app"})
        assert made.status_code == 200, made.text
        assert (await admin(app.http, "DELETE", "/v1/admin/keys/logged-app")).status_code == 204
        assert "logged-app" in caplog.text  # the actions are logged (at INFO, every field a record may carry) ...
        logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
        for value in (
            token,
            PASSWORD,
            "a wrong one",
            secret,
            made.json()["key"],
            olga.cookies[COOKIE],
        ):  # ... no secret
            assert value not in logged

    caplog.set_level(logging.DEBUG)
    run(scenario)
