"""Erasure, in process against a real Redis without the engine: after it, no Redis key, stream entry or export row
holds the person's ids or text; what others stored is untouched; versions trained on their pairs are counted."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from core import keys
from core.config import Settings
from core.registry import Registry, Version
from feedback.export import export_pairs
from feedback.pairs import read_all
from feedback.records import CompletionRecord, CompletionRecords
from server.auth import account_key_id, key_id
from tests.factories import completion_record
from tests.helpers import IDS, SECRET_KEY, InProcess, in_process, run_async

pytestmark = pytest.mark.integration

USER_KEY = "sk-erasure-user"
ADMIN_KEY = "sk-erasure-admin"
ORIGIN = "http://test"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def run(redis_url: str) -> Callable[..., None]:
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    settings = Settings(
        _env_file=None, redis_url=redis_url, api_keys=[USER_KEY], admin_key=ADMIN_KEY, secret_key=SECRET_KEY
    )

    async def go(scenario: Callable[[InProcess], object]) -> None:
        async with in_process(settings, ORIGIN) as app:
            await scenario(app)

    return lambda scenario: run_async(go(scenario))


async def taught(app: InProcess, http: httpx.AsyncClient, key_id_: str, user: str, text: str) -> CompletionRecord:
    """An answer with two choices holding ``text``, rated up and down by its owner (through ``http``): one pair."""
    record = completion_record([f"{text} one.", f"{text} two."], key_id=key_id_, user=user, question=f"About {text}?")
    await CompletionRecords(app.client, 3600, IDS).save(record)
    for choice, rating in enumerate(["up", "down"]):
        body = {"completion_id": record.id, "choice_index": choice, "rating": rating, "user": user}
        response = await http.post("/v1/feedback", json=body)
        assert response.status_code == 200, response.text
    return record


def everything(store: redis.Redis) -> str:
    """Every key name, string, hash, set and stream entry in Redis, as one text to search."""
    parts = []
    for name in store.scan_iter(count=1000):
        parts.append(name.decode())
        kind = store.type(name).decode()
        if kind == "string":
            parts.append(store.get(name).decode(errors="replace"))
        elif kind == "hash":
            parts += [f"{k.decode()}={v.decode(errors='replace')}" for k, v in store.hgetall(name).items()]
        elif kind == "set":
            parts += [member.decode() for member in store.smembers(name)]
        elif kind == "stream":
            parts += [str(fields) for _, fields in store.xrange(name)]
    return "\n".join(parts)


def trained_on(store: redis.Redis, pair_ids: list[str]) -> None:
    """A version registered as a round registers one, trained on ``pair_ids``."""
    version = Version(id="v1", parent="base", state="candidate", artifact="-", created=time.time())
    Registry(store).register(version, who="trainer", why="passed the gate")
    store.sadd(keys.version_pairs_key("v1"), *pair_ids)


def test_a_person_erases_everything_they_asked_and_taught_from_the_chat_page(
    run: Callable[..., None], tmp_path: Path
) -> None:
    async def scenario(app: InProcess) -> None:
        made = await app.http.post("/v1/admin/users", json={"name": "alice"}, headers=ADMIN)
        token = made.json()["link"].split("#signin=")[1]
        page = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app.app), base_url=ORIGIN, headers={"Origin": ORIGIN}
        )
        assert (await page.post("/v1/auth/link", json={"token": token})).status_code == 200
        saved = await page.put("/v1/conversations/c1", json={"title": "Secret plans", "messages": []})
        assert saved.status_code == 200, saved.text
        hers = await taught(app, page, account_key_id("alice"), "alice", "Marmalade")
        others = httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app), base_url=ORIGIN)
        others.headers["Authorization"] = f"Bearer {USER_KEY}"
        theirs = await taught(app, others, key_id(USER_KEY), "bob", "Porridge")
        pairs = read_all(app.store)
        trained_on(app.store, [pair.pair_id for _, pair in pairs])
        her_id = IDS.user_id(account_key_id("alice"), "alice")
        assert her_id in everything(app.store) and "Marmalade" in everything(app.store)

        erased = await page.post("/v1/account/erase")
        assert erased.status_code == 200, erased.text
        assert erased.json() | {"versions": {}} == {
            "completions": 1,
            "conversations": 1,
            "events": 2,
            "pairs": 1,
            "versions": {},
        }
        assert erased.json()["versions"] == {"v1": 1}
        stored = everything(app.store)
        for trace in (her_id, "Marmalade", "Secret plans", hers.id, hers.conversation_id, "account:alice"):
            assert trace not in stored, trace
        assert "Porridge" in stored and theirs.id in stored, "someone else's data is untouched"
        assert export_pairs(app.store, tmp_path / "pairs.jsonl") == 1
        assert "Marmalade" not in (tmp_path / "pairs.jsonl").read_text()
        assert Registry(app.store).get("v1").erased_pairs == 1
        assert (await page.get("/v1/conversations")).status_code == 401, "signed out everywhere"
        await page.aclose()
        await others.aclose()

    run(scenario)


def test_an_apps_user_is_erased_under_every_key_or_one(run: Callable[..., None]) -> None:
    async def scenario(app: InProcess) -> None:
        made = await app.http.post("/v1/admin/keys", json={"name": "shop", "train": True}, headers=ADMIN)
        shop_key = made.json()["key"]
        clients = {}
        for key in (USER_KEY, shop_key):
            clients[key] = httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app), base_url=ORIGIN)
            clients[key].headers["Authorization"] = f"Bearer {key}"
        await taught(app, clients[USER_KEY], key_id(USER_KEY), "carol", "Teacup")
        await taught(app, clients[shop_key], key_id(shop_key), "carol", "Saucer")
        one = await app.http.post("/v1/admin/erasures", json={"user": "carol", "api_key": "shop"}, headers=ADMIN)
        assert one.status_code == 200 and one.json()["pairs"] == 1, one.text
        assert "Saucer" not in everything(app.store) and "Teacup" in everything(app.store)
        every = await app.http.post("/v1/admin/erasures", json={"user": "carol"}, headers=ADMIN)
        assert every.status_code == 200 and every.json()["completions"] == 1, every.text
        stored = everything(app.store)
        assert "Teacup" not in stored and IDS.user_id(key_id(USER_KEY), "carol") not in stored
        (entry,) = app.store.xrange(keys.ERASURES)[-1:]
        assert "carol" not in str(entry), "the record of an erasure holds no one's name"
        missing = await app.http.post("/v1/admin/erasures", json={"user": "carol", "api_key": "nope"}, headers=ADMIN)
        assert missing.status_code == 404
        both = await app.http.post("/v1/admin/erasures", json={"user": "x", "account": "y"}, headers=ADMIN)
        assert both.status_code == 400
        for client in clients.values():
            await client.aclose()

    run(scenario)
