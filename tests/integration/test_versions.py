"""Policy versions in running servers: hot swaps and canaries under load, two replicas on one registry, faults,
the automatic rollback, the admin API, the CLI and the ops page.

Two real servers share one Redis and one data folder, as replicas do. Versions are LoRA adapters with random
weights (training one takes minutes): they change the answers, which is all that routing needs.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import torch
from playwright.sync_api import Browser, expect

from core import keys
from core.config import LOCAL_ADMIN_KEY, LOCAL_API_KEY, PPOSettings, ToolSettings
from core.policy import ADAPTER_DIRNAME, TRAINEES_DIRNAME
from core.registry import Registry
from core.routing import Routing, routed_version
from server.auth import key_id
from tests.factories import random_version
from tests.helpers import IDS, REPO, RedisHandle, engine_loaded, start_server, stop_server
from trainer.chat_text import Prompt
from trainer.engine_rollouts import EngineSampler
from trainer.models import load_policy, load_tokenizer
from trainer.ppo import PPOTrainer
from trainer.sampling import Sampling

pytestmark = pytest.mark.integration

CLIENTS = 8
SETTLE_S = 2.5
FAST = {"CHATLOOP_ROLLOUT__RECONCILE_SECONDS": "1", "CHATLOOP_ROLLOUT__ROLLBACK_MIN_ANSWERS": "5"}


@dataclass
class Cluster:
    redis: RedisHandle
    processes: list[subprocess.Popen[bytes]]
    urls: list[str]
    shared: Path
    """The data folder's parent, which both servers share."""
    model_path: Path

    @property
    def versions_dir(self) -> Path:
        return self.shared / "data" / "versions"

    def admin(self, index: int = 0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {LOCAL_ADMIN_KEY}"}
        return httpx.Client(base_url=self.urls[index], headers=headers, timeout=120)

    def sdk(self, index: int = 0, key: str = LOCAL_API_KEY) -> openai.OpenAI:
        """A user's client by default; with the admin key, one that may pin any version."""
        return openai.OpenAI(base_url=self.urls[index] + "/v1", api_key=key, max_retries=0, timeout=120)

    def make_version(self, seed: int, corrupt: bool = False) -> str:
        return random_version(self.redis.client(), self.versions_dir, self.model_path, seed, corrupt=corrupt)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Cluster]:
    redis_handle = RedisHandle.start(tmp_path_factory.mktemp("versions-redis"))
    shared = tmp_path_factory.mktemp("replicas")
    processes, urls = [], []
    try:
        for _ in range(2):
            process, url, _ = start_server(shared, redis_handle.url, model_path, FAST)
            processes.append(process)
            urls.append(url)
        yield Cluster(redis_handle, processes, urls, shared, model_path)
    finally:
        for process in processes:
            stop_server(process)
        redis_handle.server.stop()


@pytest.fixture(scope="module")
def versions(cluster: Cluster) -> list[str]:
    return [cluster.make_version(seed) for seed in (1, 2)]


def change(cluster: Cluster, path: str, body: dict | None = None, index: int = 0) -> Routing:
    with cluster.admin(index) as admin:
        response = admin.post(f"/v1/admin{path}", json=body or {})
    assert response.status_code == 200, response.text
    return Routing.model_validate(response.json()["applied"])


def routing_of(cluster: Cluster, index: int) -> tuple[Routing, Routing | None]:
    with cluster.admin(index) as admin:
        view = admin.get("/v1/admin/routing").json()
    return Routing.model_validate(view["stored"]), view["applied"] and Routing.model_validate(view["applied"])


def wait_applied(cluster: Cluster, index: int, timeout: float = 30) -> None:
    """Until server ``index`` applies the stored routing. How fast is a benchmark's question (bench/swap.py); the
    timeout only tells a server that never follows from a slow machine."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        stored, applied = routing_of(cluster, index)
        if applied is not None and applied == stored:
            return
        time.sleep(0.1)
    raise AssertionError(f"server {index} did not apply {stored} within {timeout} s (it serves {applied})")


def answer(
    cluster: Cluster, user: str, model: str = "chatloop", index: int = 0, key: str = LOCAL_API_KEY
) -> tuple[str, str]:
    """(completion id, version) of a short answer."""
    completion = cluster.sdk(index, key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, user=user
    )
    return completion.id, completion.system_fingerprint


def side(routing: Routing, user: str) -> str:
    """The version the routing serves to ``user`` of the local key, by the servers' keyed split."""
    uid = IDS.user_id(key_id(LOCAL_API_KEY), user)
    return routed_version(routing, IDS.split_point(routing.canary, uid) if routing.canary else 100.0)


@dataclass
class Sample:
    started: float
    user: str
    completion_id: str | None = None
    version: str | None = None
    error: str | None = None


def stream_forever(cluster: Cluster, worker: int, stop: threading.Event, samples: list[Sample]) -> None:
    client = cluster.sdk()
    turn = 0
    while not stop.is_set():
        sample = Sample(started=time.monotonic(), user=f"load-{worker}-{turn % 6}")
        turn += 1
        try:
            stream = client.chat.completions.create(
                model="chatloop",
                messages=[{"role": "user", "content": f"Tell me a fact, number {turn}."}],
                max_tokens=24,
                stream=True,
                user=sample.user,
            )
            for chunk in stream:
                sample.completion_id, sample.version = chunk.id, chunk.system_fingerprint
        except Exception as exc:  # every failure counts, whatever its kind
            sample.error = repr(exc)
        samples.append(sample)


def settle(samples: list[Sample], since: float, timeout_s: float = 120) -> None:
    """At least SETTLE_S, and until every client has finished an answer it started after ``since``: on a slow
    machine a fixed pause would leave windows with too few answers to check."""
    time.sleep(SETTLE_S)
    while sum(sample.started > since for sample in samples) < CLIENTS and time.monotonic() < since + timeout_s:
        time.sleep(0.2)


def test_swaps_and_canaries_under_load_fail_nothing_and_route_as_told(cluster: Cluster, versions: list[str]) -> None:
    v1, v2 = versions
    steps = [
        (f"/versions/{v1}/promote", {"canary_percent": 50}),
        (f"/versions/{v1}/promote", None),
        (f"/versions/{v2}/promote", {"canary_percent": 50}),
        ("/rollback", None),
        ("/rollback", None),
        (f"/versions/{v2}/promote", None),
        (f"/versions/{v1}/promote", None),
        ("/rollback", None),
    ]
    samples: list[Sample] = []
    stop = threading.Event()
    workers = [threading.Thread(target=stream_forever, args=(cluster, i, stop, samples)) for i in range(CLIENTS)]
    for worker in workers:
        worker.start()
    windows = []  # (routing, from, to): requests started in between must follow that routing
    try:
        settle(samples, 0.0)
        windows.append((routing_of(cluster, 0)[1], 0.0, time.monotonic()))
        for path, body in steps:
            routing = change(cluster, path, body)
            applied_at = time.monotonic()
            settle(samples, applied_at)
            windows.append((routing, applied_at, time.monotonic()))
    finally:
        stop.set()
        for worker in workers:
            worker.join()

    assert [s.error for s in samples if s.error] == []
    assert len(samples) > 40
    records = cluster.redis.client()
    checked, seen = 0, set()
    for routing, start, end in windows:
        for sample in (s for s in samples if start < s.started < end - 0.05):
            assert sample.version == side(routing, sample.user), (sample, routing)
            checked += 1
            seen.add(sample.version)
    assert checked > 20 and seen == {"base", v1, v2}
    for sample in samples[:: max(1, len(samples) // 20)]:
        record = records.get(keys.completion_key(sample.completion_id))
        assert record is not None and f'"version":"{sample.version}"' in record
    wait_applied(cluster, 1)


def test_a_second_replica_follows_every_change(cluster: Cluster, versions: list[str]) -> None:
    v1, v2 = versions
    change(cluster, f"/versions/{v1}/promote", {"canary_percent": 30}, index=1)
    wait_applied(cluster, 0)
    stored, _ = routing_of(cluster, 0)
    assert (stored.active, stored.canary) == (v2, v1)
    for user in ("a", "b", "c", "d"):
        for index in (0, 1):
            assert answer(cluster, user, index=index)[1] == side(stored, user)
    assert answer(cluster, "a", model="chatloop@base", index=1, key=LOCAL_ADMIN_KEY)[1] == "base"
    with pytest.raises(openai.NotFoundError):
        answer(cluster, "a", model="chatloop@base", index=1)  # a user may pin the active version and the canary only


def test_adapters_answer_with_their_own_weights(cluster: Cluster, versions: list[str]) -> None:
    """The active version is merged, the others run as adapters (the base model too, as its difference to the
    active one): each greedy answer is its own, so no adapter was skipped."""
    v1, v2 = versions
    assert routing_of(cluster, 0)[1].active == v2

    def greedy(model: str) -> str:
        completion = cluster.sdk(key=LOCAL_ADMIN_KEY).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Name three colours."}], max_tokens=12, temperature=0
        )
        return completion.choices[0].message.content

    answers = {model: greedy(model) for model in ("chatloop@base", f"chatloop@{v1}", f"chatloop@{v2}")}
    assert len(set(answers.values())) == 3, answers


def test_a_trainer_samples_rollouts_with_its_adapter_from_the_engine(cluster: Cluster, versions: list[str]) -> None:
    """PPO's rollouts from the serving engine: the trainer's adapter in the making, saved where the server reads it,
    answers as that adapter does (here a copy of v1's, greedy: the same words as a request pinned to v1) while
    another version is active; it is unloaded and removed after."""
    v1, _ = versions
    assert routing_of(cluster, 0)[1].active != v1
    question = [{"role": "user", "content": "Name three colours."}]
    pinned = cluster.sdk(key=LOCAL_ADMIN_KEY).chat.completions.create(
        model=f"chatloop@{v1}", messages=question, max_tokens=12, temperature=0
    )
    trainees = cluster.versions_dir / TRAINEES_DIRNAME
    policy = load_policy(cluster.model_path, cluster.versions_dir / v1 / ADAPTER_DIRNAME, PPOSettings())
    sampler = EngineSampler(cluster.urls[0], LOCAL_ADMIN_KEY, trainees, max_answers=1)  # a request per prompt
    greedy = Sampling(temperature=1e-6, max_new_tokens=12)  # below vLLM's 1e-5: greedy
    ppo = PPOTrainer(
        policy, load_tokenizer(cluster.model_path, ToolSettings()), lambda *_: None, PPOSettings(), 0, greedy, sampler
    )
    sequences, attention, prompt_length = ppo.generate([Prompt(question)] * 2, "rollout")
    assert ppo.engine is sampler, "the engine answered: no fall back to the trainer's own sampling"
    assert ppo.decode(sequences, prompt_length) == [pinned.choices[0].message.content] * 2
    assert ppo.ended(sequences, prompt_length) == [pinned.choices[0].finish_reason == "stop"] * 2
    assert torch.equal(attention[0], attention[1])
    assert not any(trainees.iterdir()), "the trainee's adapter is removed once sampled"

    with cluster.admin() as admin:
        body = {"adapter": "x", "prompts": [[1, 2, 3]], "max_tokens": 4}
        outside = admin.post("/v1/admin/rollouts", json={**body, "adapter": f"../{v1}/{ADAPTER_DIRNAME}"})
        assert outside.status_code == 400 and outside.json()["error"]["param"] == "adapter"
        assert admin.post("/v1/admin/rollouts", json=body).json()["error"]["code"] == "adapter_not_found"
        too_many = admin.post("/v1/admin/rollouts", json={**body, "prompts": [[1]] * 33})
        assert too_many.status_code == 400 and "at most 32" in too_many.json()["error"]["message"]
        unknown = admin.post("/v1/admin/rollouts", json={**body, "prompts": [[1], [10**9]]})
        assert unknown.status_code == 400 and "vocabulary" in unknown.json()["error"]["message"]
    with httpx.Client(base_url=cluster.urls[0], timeout=30) as http:
        user = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
        assert http.post("/v1/admin/rollouts", headers=user, json=body).status_code == 403


def test_a_missed_message_is_caught_up_by_reconciling(cluster: Cluster, versions: list[str]) -> None:
    client = cluster.redis.client()
    stored = Registry(client).routing()
    silent = stored.model_copy(update={"revision": stored.revision + 1, "canary_percent": 77.0})
    client.set(keys.ROUTING, silent.model_dump_json())  # no pub/sub message, as if it had been lost
    for index in (0, 1):
        wait_applied(cluster, index, timeout=10)  # no message came: only reconciling can apply it
        assert routing_of(cluster, index)[1].canary_percent == 77.0


def test_a_broken_version_fails_its_load_and_the_servers_keep_serving(cluster: Cluster, versions: list[str]) -> None:
    broken = cluster.make_version(seed=3, corrupt=True)
    before = change(cluster, "/rollback")  # ends the canary: the rollback below then undoes the promotion
    applied = change(cluster, f"/versions/{broken}/promote")
    assert routing_of(cluster, 0)[0].active == broken and applied.active == before.active
    assert answer(cluster, "after-broken")[1] == before.active
    with cluster.admin() as admin:
        listed = {v["id"]: v for v in admin.get("/v1/admin/versions").json()["data"]}
    assert "checksums" in listed[broken]["load_errors"]["error"], "the damage is caught before the engine sees it"
    unready = httpx.get(f"{cluster.urls[0]}/ready")
    assert unready.status_code == 503 and unready.json()["error"]["code"] == "active_version_unavailable"
    with cluster.sdk(key=LOCAL_ADMIN_KEY) as sdk, pytest.raises(openai.APIStatusError) as refused:
        sdk.chat.completions.create(model=f"chatloop@{broken}", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 503, "a registered version that fails its load is unavailable, not unknown"
    change(cluster, "/rollback")
    assert routing_of(cluster, 0)[0].active == before.active
    assert httpx.get(f"{cluster.urls[0]}/ready").status_code == 200


def test_redis_down_keeps_serving_and_the_servers_reconnect(cluster: Cluster, versions: list[str]) -> None:
    v1, _ = versions
    active = routing_of(cluster, 0)[1].active
    cluster.redis.server.stop()
    try:
        assert answer(cluster, "no-redis", model=f"chatloop@{active}")[1] == active
    finally:
        cluster.redis.restart()
    change(cluster, f"/versions/{v1}/promote", {"canary_percent": 10})
    wait_applied(cluster, 1)


def test_a_canary_users_dislike_is_rolled_back_automatically(cluster: Cluster) -> None:
    canary = cluster.make_version(seed=4)
    routing = change(cluster, f"/versions/{canary}/promote", {"canary_percent": 50})
    users = [f"judge-{i}" for i in range(40)]
    on_canary = [u for u in users if side(routing, u) == canary][:6]
    on_active = [u for u in users if side(routing, u) == routing.active][:6]
    # Every canary answer is served before the first rating: the autopilot may act on the fifth thumbs-down.
    served = [(user, *answer(cluster, user)) for user in on_canary]
    assert {version for _, _, version in served} == {canary}
    with httpx.Client(base_url=cluster.urls[0], headers={"Authorization": f"Bearer {LOCAL_API_KEY}"}) as http:
        for user, completion_id, _ in served:
            rated = http.post("/v1/feedback", json={"completion_id": completion_id, "rating": "down", "user": user})
            assert rated.status_code == 200, rated.text
    for user in on_active:
        answer(cluster, user)
    deadline = time.monotonic() + 20
    while routing_of(cluster, 0)[0].canary == canary and time.monotonic() < deadline:
        time.sleep(0.5)
    assert routing_of(cluster, 0)[0].canary is None
    audit = Registry(cluster.redis.client()).get(canary).audit[-1]
    assert audit.who == "autopilot" and audit.state == "retired" and "p=" in audit.why


def test_admin_api_needs_the_admin_key_and_rejects_bad_input(cluster: Cluster, versions: list[str]) -> None:
    with httpx.Client(base_url=cluster.urls[0], timeout=30) as http:
        assert http.get("/v1/admin/versions").status_code == 401
        user = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
        forbidden = http.post(f"/v1/admin/versions/{versions[0]}/promote", headers=user, json={})
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "admin_key_required"
    with cluster.admin() as admin:
        too_much = admin.post(f"/v1/admin/versions/{versions[0]}/promote", json={"canary_percent": 150})
        assert too_much.status_code == 400 and too_much.json()["error"]["param"] == "canary_percent"
        missing = admin.post("/v1/admin/versions/v999/promote", json={})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "version_not_found"


def test_policy_cli_lists_and_promotes(cluster: Cluster, versions: list[str]) -> None:
    v1, v2 = versions
    command = [sys.executable, "-m", "client.cli", "policy"]
    common = ["--url", cluster.urls[0], "--key", LOCAL_ADMIN_KEY]
    promoted = subprocess.run(
        [*command, "promote", v1, *common, "--reason", "cli test"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.strip() == f"routing: active {v1}"
    listed = subprocess.run([*command, "list", *common], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and f"routing: active {v1}" in listed.stdout and v2 in listed.stdout
    assert Registry(cluster.redis.client()).get(v1).audit[-1].why == "cli test"
    refused = subprocess.run([*command, "retire", v1, *common], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "is active" in refused.stderr


def test_ops_page_shows_versions_and_acts(cluster: Cluster, versions: list[str], browser: Browser) -> None:
    page = browser.new_page()
    try:
        page.goto(cluster.urls[0] + "/admin")
        expect(page.locator("#banner")).to_contain_text("admin key")
        page.fill("#admin-key", LOCAL_ADMIN_KEY)
        page.click("#key-form button")
        stored = routing_of(cluster, 0)[0]
        expect(page.locator("#routing")).to_contain_text(f"Active {stored.active}")
        expect(page.locator("#versions tbody tr")).to_have_count(len(Registry(cluster.redis.client()).all()))
        expect(page.locator("#rates-chart svg")).to_be_visible()
        retired = versions[1]  # the CLI test above made the other one active
        page.once("dialog", lambda dialog: dialog.accept("25"))
        page.locator("#versions tbody tr", has_text=retired).get_by_role("button", name="Canary…").click()
        expect(page.locator("#routing")).to_contain_text(f"canary {retired} for 25% of users")
        assert routing_of(cluster, 0)[0].canary == retired
    finally:
        page.close()


def test_users_pin_only_what_they_may_and_pinned_votes_steer_nothing(cluster: Cluster) -> None:
    """A user may pin the active version, the canary and what an admin made pinnable; the rest does not exist for
    them. Answers pinned to the canary, however rated, are no votes in its period (docs/threat-model.md)."""
    registry = Registry(cluster.redis.client())
    rejected, candidate, canary = (cluster.make_version(seed) for seed in (5, 6, 7))
    registry.register(registry.get(rejected).model_copy(update={"state": "rejected"}), who="test", why="the gate")
    change(cluster, f"/versions/{canary}/promote", {"canary_percent": 50})
    wait_applied(cluster, 0)
    with cluster.sdk() as sdk, cluster.sdk(key=LOCAL_ADMIN_KEY) as admin_sdk:
        listed = {model.id for model in sdk.models.list()}
        assert f"chatloop@{canary}" in listed and not listed & {f"chatloop@{rejected}", f"chatloop@{candidate}"}
        assert {f"chatloop@{rejected}", f"chatloop@{candidate}"} <= {model.id for model in admin_sdk.models.list()}
    for version in (rejected, candidate):
        with pytest.raises(openai.NotFoundError):
            answer(cluster, "pinner", model=f"chatloop@{version}")
    with cluster.admin() as admin:
        assert admin.post(f"/v1/admin/versions/{candidate}/pinnable", json={"pinnable": True}).status_code == 200
    wait_applied(cluster, 0)
    assert answer(cluster, "pinner", model=f"chatloop@{candidate}")[1] == candidate

    period = registry.routing().canary_period
    with httpx.Client(base_url=cluster.urls[0], headers={"Authorization": f"Bearer {LOCAL_API_KEY}"}) as http:
        for user in [f"steerer-{i}" for i in range(6)]:
            completion_id, version = answer(cluster, user, model=f"chatloop@{canary}")
            assert version == canary
            rated = http.post("/v1/feedback", json={"completion_id": completion_id, "rating": "down", "user": user})
            assert rated.status_code == 200, rated.text
    counts = cluster.redis.client().hgetall(keys.canary_counts_key(period))
    assert not any(field.startswith(f"{canary}:") for field in counts), counts
    time.sleep(3)  # three autopilot turns at FAST's reconcile period
    assert registry.routing().canary == canary


def test_a_replica_started_while_redis_is_down_is_unready_until_it_has_read_the_routing(cluster: Cluster) -> None:
    """Until it has read the routing it serves the base model, whatever the other replicas serve: no load balancer
    may send it users. It follows within the reconcile period once Redis is back."""
    active = cluster.make_version(seed=8)
    if Registry(cluster.redis.client()).routing().canary:
        change(cluster, "/rollback")  # ends the canary, so that the promotion makes the version active
    change(cluster, f"/versions/{active}/promote")
    stop_server(cluster.processes[1])
    cluster.redis.server.stop()
    try:
        process, url, _ = start_server(cluster.shared, cluster.redis.url, cluster.model_path, FAST, engine_loaded)
        cluster.processes[1], cluster.urls[1] = process, url
        unready = httpx.get(f"{url}/ready")
        assert unready.status_code == 503 and unready.json()["error"]["code"] == "routing_unknown"
    finally:
        cluster.redis.restart()
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/ready").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert httpx.get(f"{url}/ready").status_code == 200
    assert routing_of(cluster, 1)[1].active == active


def test_a_replica_killed_during_a_swap_serves_the_stored_active_version_once_restarted(cluster: Cluster) -> None:
    """``kill -9`` while the replica swaps a promoted version in (building its merged weights or loading them). Started
    again, it serves the stored active version, and until it does, ``/ready`` says why not: never another version
    under a ready flag."""
    version = cluster.make_version(seed=9)
    if Registry(cluster.redis.client()).routing().canary:
        change(cluster, "/rollback")
    log_path = cluster.shared / f"server-{cluster.urls[1].rsplit(':', 1)[1]}.log"
    wait_applied(cluster, 1)
    active = routing_of(cluster, 1)[1].active
    change(cluster, f"/versions/{version}/promote")
    deadline = time.monotonic() + 30
    started = f"active version swap started from='{active}' version='{version}'"
    while started not in log_path.read_text():
        assert time.monotonic() < deadline, "the replica never started the swap"
        time.sleep(0.01)
    cluster.processes[1].kill()
    stop_server(cluster.processes[1])  # the engine's processes, which outlive the server's kill -9
    process, url, _ = start_server(cluster.shared, cluster.redis.url, cluster.model_path, FAST, engine_loaded)
    cluster.processes[1], cluster.urls[1] = process, url
    deadline = time.monotonic() + 60
    while (ready := httpx.get(f"{url}/ready")).status_code != 200:
        assert ready.json()["error"]["code"] in {"routing_unknown", "engine_loading"}, ready.text
        assert time.monotonic() < deadline, f"never ready again: {ready.text}"
        time.sleep(0.2)
    assert routing_of(cluster, 1)[1].active == version
    assert answer(cluster, "after-the-kill", index=1)[1] == version
