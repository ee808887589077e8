"""One short turn of the closed loop, to keep its mechanics honest: simulated users chat and give feedback, a real
training round (tiny) makes a version, the autopilot canaries it and then promotes it or rolls it back on the
users' thumbs, and the report shows it all.
The full experiment is a benchmark (bench/loop.py), not a test."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from client.simulation.experiment import run_experiment
from client.simulation.preferences import resolve
from client.simulation.prompt_set import load_prompts
from client.simulation.users import Behaviour, Shares, Turn, simulate
from core.config import LOCAL_ADMIN_KEY, LOCAL_API_KEY
from core.registry import Registry
from tests.helpers import REPO, SMALL_ROUND, RedisHandle, run_async, start_server, stop_server

pytestmark = pytest.mark.integration

PREFERENCE = "client.simulation.preferences:concise"
AUTOPILOT = {
    "CHATLOOP_ROLLOUT__RECONCILE_SECONDS": "1",
    "CHATLOOP_ROLLOUT__AUTO_CANARY": "true",
    "CHATLOOP_ROLLOUT__AUTO_CANARY_PERCENT": "50",
    "CHATLOOP_ROLLOUT__AUTO_PROMOTE": "true",
    "CHATLOOP_ROLLOUT__PROMOTE_MIN_ANSWERS": "3",
}
OPEN_GATE = {
    "CHATLOOP_GATE__MIN_REWARD_GAIN": "-1000",
    "CHATLOOP_GATE__KL_BUDGET": "1000",
    "CHATLOOP_GATE__MAX_LENGTH_GROWTH": "100",
    "CHATLOOP_GATE__MAX_LENGTH_SHRINK": "0.99",
    "CHATLOOP_GATE__MAX_REPETITION": "1",
}
"""A round this small proves nothing about quality: the gate is opened so that the mechanics are what is tested."""
BEHAVIOUR = Behaviour(
    users=3, shares=Shares(silent=0.0, random=0.0, thumb_only=0.0), think_seconds=0.5, max_tokens=32, seed=1
)


def decided(url: str, registry: Registry, timeout_s: float = 180) -> bool:
    """Whether the autopilot ended the canary (promoted, or rolled back as worse: a round this small may well
    make a worse policy); more answers are asked for while it has too few to judge."""
    deadline = time.monotonic() + timeout_s
    users = (f"extra-{turn}" for turn in itertools.count())
    body = {"model": "chatloop", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {LOCAL_API_KEY}"}, timeout=120) as http:
        while registry.routing().canary is not None:
            if time.monotonic() > deadline:
                return False
            http.post("/v1/chat/completions", json={**body, "user": next(users)})
    return True


def test_users_teach_a_round_whose_version_goes_live(tmp_path: Path, model_path: Path) -> None:
    redis_handle = RedisHandle.start(tmp_path / "redis")
    process, url, _ = start_server(tmp_path, redis_handle.url, model_path, AUTOPILOT)
    try:
        turns: list[Turn] = []
        run_async(simulate(url, LOCAL_API_KEY, resolve(PREFERENCE), load_prompts(), BEHAVIOUR, 30, turns.extend))
        assert turns and {turn.version for turn in turns} == {"base"}
        assert any(turn.regeneration for turn in turns), "no answer was disliked: the preference is too easy"

        env = {
            "REDIS_URL": redis_handle.url,
            "CHATLOOP_DATA_DIR": str(tmp_path / "data"),
            "CHATLOOP_MODEL": str(model_path),
            **SMALL_ROUND,
            **OPEN_GATE,
        }
        trained = subprocess.run(
            [sys.executable, "-m", "client.cli", "train", "--once"],
            cwd=REPO,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert trained.stdout.startswith("v1 candidate"), trained.stdout

        out = tmp_path / "report"
        summary = run_experiment(url, LOCAL_API_KEY, LOCAL_ADMIN_KEY, PREFERENCE, 0.75, BEHAVIOUR, out, "test")
        assert "v1" in summary["by_version"]
        registry = Registry(redis_handle.client())
        assert decided(url, registry), "the autopilot did not judge the canary"
        last = registry.get("v1").audit[-1]
        assert last.who == "autopilot" and (last.state, registry.routing().active) in {
            ("active", "v1"),
            ("retired", "base"),
        }
        (round_row,) = summary["rounds"]
        assert round_row["version"] == "v1" and round_row["minutes_to_serving"] is not None
        assert (out / "loop.png").stat().st_size > 10_000
        assert "| v1 (from base) | candidate |" in (out / "report.md").read_text()
        assert json.loads((out / "results.json").read_text())["preference"] == PREFERENCE
    finally:
        stop_server(process)
        redis_handle.server.stop()
