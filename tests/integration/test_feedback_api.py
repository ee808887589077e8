"""Feedback through the real server into a real Redis: each rule's pair, ownership, bad input, consumers, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import datasets
import httpx
import openai
import pytest
from openai import OpenAI

from core.config import LOCAL_ADMIN_KEY, LOCAL_API_KEY
from feedback.pairs import Pair, PairConsumer, read_all
from tests.helpers import FEEDBACK_PER_MINUTE, OTHER_USER_KEY, PAIRS_PER_HOUR, REPO, ServerHandle

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "Name a fruit."}]
OTHER_QUESTION = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def client(server: ServerHandle) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key=LOCAL_API_KEY, max_retries=0, timeout=120)


@pytest.fixture
def user() -> str:
    """A fresh end user per test, so that rate limits, quotas and conversations never cross tests."""
    return f"user-{uuid.uuid4().hex[:8]}"


def ask(client: OpenAI, user: str, n: int = 1, messages: list | None = None, metadata: dict | None = None):
    return client.chat.completions.create(
        model="chatloop", messages=messages or QUESTION, max_tokens=8, n=n, user=user, metadata=metadata
    )


def send(server: ServerHandle, body: dict, key: str = LOCAL_API_KEY) -> httpx.Response:
    with server.http(key) as http:
        return http.post("/v1/feedback", json=body)


def rate(server: ServerHandle, user: str, completion_id: str, index: int, rating: str | None) -> dict:
    response = send(server, {"completion_id": completion_id, "choice_index": index, "rating": rating, "user": user})
    assert response.status_code == 200, response.text
    return response.json()


def pairs_of(server: ServerHandle, *completion_ids: str) -> list[Pair]:
    ids = set(completion_ids)
    return [
        pair
        for _, pair in read_all(server.redis.client())
        if pair.chosen.completion_id in ids or pair.rejected.completion_id in ids
    ]


def test_rating_is_stored_and_answered(server: ServerHandle, client: OpenAI, user: str) -> None:
    answer = ask(client, user)
    body = rate(server, user, answer.id, 0, "up")
    assert body["object"] == "feedback" and body["type"] == "rating" and body["id"].startswith("evt-")
    assert body["rating"]["rating"] == "up" and body["pairs"] == [] and body["pairs_capped"] == 0
    assert any(e["id"] == body["id"] and e["answer"] == f"{answer.id}:0" for e in server.recent_events(20))


def test_up_and_down_in_one_conversation_make_one_pair(server: ServerHandle, client: OpenAI, user: str) -> None:
    answer = ask(client, user, n=2)
    assert rate(server, user, answer.id, 0, "up")["pairs"] == []
    made = rate(server, user, answer.id, 1, "down")["pairs"]
    assert [(p["rule"], p["chosen"]["choice_index"], p["rejected"]["choice_index"]) for p in made] == [
        ("up_vs_down", 0, 1)
    ]
    rate(server, user, answer.id, 1, "down")  # the same gesture again
    (pair,) = pairs_of(server, answer.id)
    assert pair.chosen.text == answer.choices[0].message.content
    assert pair.rejected.text == answer.choices[1].message.content
    assert pair.prompt[0].content == QUESTION[0]["content"] and pair.chosen.version == "base"
    assert pair.weight == 1.0 and user not in pair.user_id


def test_ties_and_single_ratings_make_no_pair(server: ServerHandle, client: OpenAI, user: str) -> None:
    answer = ask(client, user, n=2)
    rate(server, user, answer.id, 0, "up")
    rate(server, user, answer.id, 1, "up")
    assert pairs_of(server, answer.id) == []


def test_comparison_makes_its_pair_once(server: ServerHandle, client: OpenAI, user: str) -> None:
    answer = ask(client, user, n=2)
    body = {
        "chosen": {"completion_id": answer.id, "choice_index": 1},
        "rejected": {"completion_id": answer.id, "choice_index": 0},
        "user": user,
    }
    first = send(server, body).json()
    assert first["type"] == "comparison" and [p["rule"] for p in first["pairs"]] == ["comparison"]
    assert send(server, body).json()["pairs"] == []
    (pair,) = pairs_of(server, answer.id)
    assert (pair.chosen.choice_index, pair.rejected.choice_index, pair.rule) == (1, 0, "comparison")


def test_regeneration_rated_up_beats_the_original(server: ServerHandle, client: OpenAI, user: str) -> None:
    original = ask(client, user)
    regenerated = ask(client, user, metadata={"regenerate_of": original.id})
    made = rate(server, user, regenerated.id, 0, "up")["pairs"]
    assert [p["rule"] for p in made] == ["regenerate_up"]
    (pair,) = pairs_of(server, original.id)
    assert pair.chosen.completion_id == regenerated.id and pair.rejected.completion_id == original.id
    assert pair.weight == 0.75


def test_original_rated_down_after_regeneration(server: ServerHandle, client: OpenAI, user: str) -> None:
    original = ask(client, user, n=2)
    regenerated = ask(client, user, metadata={"regenerate_of": original.id, "regenerate_choice": "1"})
    rate(server, user, original.id, 0, "down")  # not the regenerated choice: no regeneration pair
    assert pairs_of(server, regenerated.id) == []
    made = rate(server, user, original.id, 1, "down")["pairs"]
    assert [(p["rule"], p["chosen"]["completion_id"]) for p in made] == [("regenerate_down", regenerated.id)]


def test_answer_and_regeneration_can_be_compared(server: ServerHandle, client: OpenAI, user: str) -> None:
    original = ask(client, user)
    regenerated = ask(client, user, metadata={"regenerate_of": original.id})
    body = {
        "chosen": {"completion_id": original.id},
        "rejected": {"completion_id": regenerated.id},
        "user": user,
    }
    assert [p["rule"] for p in send(server, body).json()["pairs"]] == ["comparison"]


def test_regeneration_must_name_an_owned_answer_to_the_same_messages(
    server: ServerHandle, client: OpenAI, user: str
) -> None:
    original = ask(client, user)
    with pytest.raises(openai.APIStatusError) as unknown:
        ask(client, user, metadata={"regenerate_of": "chatcmpl-nope"})
    assert unknown.value.status_code == 404
    with pytest.raises(openai.APIStatusError) as other_messages:
        ask(
            client,
            user,
            messages=[{"role": "user", "content": "Name a colour."}],
            metadata={"regenerate_of": original.id},
        )
    assert other_messages.value.status_code == 400
    with pytest.raises(openai.APIStatusError) as someone_else:
        ask(client, "another-user", metadata={"regenerate_of": original.id})
    assert someone_else.value.status_code == 404


def test_comparing_different_conversations_is_400(server: ServerHandle, client: OpenAI, user: str) -> None:
    first = ask(client, user)
    second = ask(client, user, messages=OTHER_QUESTION)
    body = {"chosen": {"completion_id": first.id}, "rejected": {"completion_id": second.id}, "user": user}
    response = send(server, body)
    assert response.status_code == 400 and response.json()["error"]["code"] == "different_conversations"


def test_only_the_receiver_may_rate(server: ServerHandle, client: OpenAI, user: str) -> None:
    answer = ask(client, user)
    body = {"completion_id": answer.id, "rating": "up", "user": user}
    for key, who in ((OTHER_USER_KEY, user), (LOCAL_API_KEY, "someone-else"), (LOCAL_ADMIN_KEY, user)):
        response = send(server, {**body, "user": who}, key=key)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "completion_not_found"
    unknown = send(server, {**body, "completion_id": "chatcmpl-unknown"})
    assert unknown.status_code == 404, "a foreign answer must look exactly like one that does not exist"
    foreign_error = response.json()["error"] | {"message": response.json()["error"]["message"].replace(answer.id, "ID")}
    unknown_error = unknown.json()["error"] | {
        "message": unknown.json()["error"]["message"].replace("chatcmpl-unknown", "ID")
    }
    assert foreign_error == unknown_error


BAD_FEEDBACK = {
    "bad rating": {"rating": "meh"},
    "missing rating": {"rating": ...},
    "negative index": {"choice_index": -1},
    "index out of range": {"choice_index": 5},
    "unknown field": {"stars": 5},
    "bad comparison": {"chosen": {"completion_id": "x"}},
}


@pytest.mark.parametrize("case", BAD_FEEDBACK)
def test_bad_feedback_is_400(server: ServerHandle, client: OpenAI, user: str, case: str) -> None:
    answer = ask(client, user)
    body = {"completion_id": answer.id, "choice_index": 0, "rating": "up", "user": user, **BAD_FEEDBACK[case]}
    body = {k: v for k, v in body.items() if v is not ...}
    response = send(server, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_malformed_json_and_no_key(server: ServerHandle) -> None:
    with server.http() as http:
        response = http.post("/v1/feedback", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert send(server, {"completion_id": "x", "rating": "up"}, key="").status_code == 401


def test_rating_an_answer_still_streaming_is_409(server: ServerHandle, user: str) -> None:
    body = {
        "model": "chatloop",
        "messages": QUESTION,
        "max_tokens": 400,
        "stream": True,
        "user": user,
        "ignore_eos": True,
    }
    with server.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as stream:
        lines = stream.iter_lines()  # kept: a dropped iterator closes the stream, which aborts the answer
        first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        early = send(server, {"completion_id": first["id"], "rating": "up", "user": user})
        foreign = send(server, {"completion_id": first["id"], "rating": "up", "user": "someone-else"})
    assert early.status_code == 409 and early.json()["error"]["code"] == "completion_in_progress"
    assert foreign.status_code == 404


def test_feedback_rate_limit_is_429(server: ServerHandle, client: OpenAI, user: str) -> None:
    answer = ask(client, user)
    if time.time() % 60 > 50:  # the limit counts per clock minute: start well inside one
        time.sleep(61 - time.time() % 60)
    ratings = [("up", "down")[i % 2] for i in range(FEEDBACK_PER_MINUTE + 4)]
    statuses = [send(server, {"completion_id": answer.id, "rating": r, "user": user}).status_code for r in ratings]
    assert statuses[:FEEDBACK_PER_MINUTE] == [200] * FEEDBACK_PER_MINUTE
    assert set(statuses[FEEDBACK_PER_MINUTE:]) == {429}


def test_pair_quota_caps_one_user(server: ServerHandle, client: OpenAI, user: str) -> None:
    answer = ask(client, user, n=4)
    for index, rating in enumerate(["up", "up", "down"]):
        rate(server, user, answer.id, index, rating)
    last = rate(server, user, answer.id, 3, "down")
    assert len(last["pairs"]) == PAIRS_PER_HOUR - 2 and last["pairs_capped"] == 1
    assert len(pairs_of(server, answer.id)) == PAIRS_PER_HOUR


def base_counts(server: ServerHandle) -> dict:
    with server.http(LOCAL_ADMIN_KEY) as http:
        data = http.get("/v1/feedback/stats").json()["data"]
    return next(v for v in data if v["version"] == "base")


def test_stats_count_per_version_and_need_admin(server: ServerHandle, client: OpenAI, user: str) -> None:
    before = base_counts(server)["counts"]
    answer = ask(client, user, n=2)
    rate(server, user, answer.id, 0, "up")
    rate(server, user, answer.id, 1, "down")
    rate(server, user, answer.id, 1, None)  # cleared: no longer counted down
    after = base_counts(server)
    assert after["counts"]["served"] == before["served"] + 2
    assert after["counts"]["up"] == before["up"] + 1 and after["counts"]["down"] == before["down"]
    assert 0 <= after["thumbs_up"]["low"] <= after["thumbs_up"]["rate"] <= after["thumbs_up"]["high"] <= 1
    with server.http() as http:
        assert http.get("/v1/feedback/stats").status_code == 403


def test_consumer_that_dies_before_ack_hands_its_pairs_over(server: ServerHandle, client: OpenAI, user: str) -> None:
    group = f"test-{uuid.uuid4().hex[:6]}"
    answer = ask(client, user, n=2)
    pair_id = send(
        server,
        {
            "chosen": {"completion_id": answer.id, "choice_index": 0},
            "rejected": {"completion_id": answer.id, "choice_index": 1},
            "user": user,
        },
    ).json()["pairs"][0]["pair_id"]
    dying = PairConsumer(server.redis.client(), "dying", group=group)
    read = {pair.pair_id: entry for entry, pair in dying.read(count=10_000)}
    assert pair_id in read
    server.redis.restart()  # and Redis itself goes down and comes back before anyone acknowledges
    heir = PairConsumer(server.redis.client(), "heir", group=group, claim_idle_s=0)
    taken = {pair.pair_id: entry for entry, pair in heir.read(count=10_000)}
    assert pair_id in taken and taken[pair_id] == read[pair_id]
    heir.ack(list(taken.values()))
    assert heir.pending() == 0
    assert heir.read(count=10) == []


def test_export_loads_with_datasets(server: ServerHandle, client: OpenAI, user: str, tmp_path: Path) -> None:
    answer = ask(client, user, n=2)
    rate(server, user, answer.id, 0, "up")
    rate(server, user, answer.id, 1, "down")
    out = tmp_path / "pairs.jsonl"
    env = {**os.environ, "REDIS_URL": server.redis.url}
    done = subprocess.run(
        [sys.executable, "-m", "client.cli", "feedback", "export", "--out", str(out), "--version", "base"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "pairs written" in done.stdout
    rows = datasets.load_dataset("json", data_files=str(out), split="train")
    assert {"prompt", "chosen", "rejected", "rule", "weight"} <= set(rows.column_names)
    ours = [row for row in rows if row["chosen_completion_id"] == answer.id]
    assert len(ours) == 1
    assert ours[0]["chosen"] == [{"role": "assistant", "content": answer.choices[0].message.content}]
    assert ours[0]["prompt"] == QUESTION
    none = tmp_path / "none.jsonl"
    subprocess.run(
        [sys.executable, "-m", "client.cli", "feedback", "export", "--out", str(none), "--version", "v999"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    assert none.read_text() == ""
