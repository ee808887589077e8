"""What the tests share besides fixtures: handles on a real redis-server and a real ``chatloop serve``, starting and
stopping such servers, and the settings they run with.

Test modules and conftest.py import from here (and synthetic data from tests/factories.py), never from one another:
pytest loads test modules and conftest.py files itself, and importing them elsewhere ties one test file to another's
insides (and, in pytest's importlib import mode, loads a second copy of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI

from core import keys
from core.config import LOCAL_ADMIN_KEY, LOCAL_API_KEY, Settings
from core.keyed_ids import KeyedIds
from core.local_redis import LocalRedis, start_local_redis

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 300
OTHER_USER_KEY = "sk-chatloop-other"
"""A second user key: its callers must not reach answers given to the first."""
SECRET_KEY = "test-secret-for-keyed-ids"
IDS = KeyedIds(SECRET_KEY.encode())
"""The keyed ids the servers the tests start compute, for tests that predict a user's id or side of a split."""
FEEDBACK_PER_MINUTE = 20
PAIRS_PER_HOUR = 3
SMALL_ROUND = {
    "CHATLOOP_REWARD__EPOCHS": "2",
    "CHATLOOP_REWARD__TOP_LAYERS": "2",
    "CHATLOOP_REWARD__MAX_LENGTH": "96",
    "CHATLOOP_PPO__ROLLOUTS": "1",
    "CHATLOOP_PPO__BATCH_PROMPTS": "2",
    "CHATLOOP_PPO__SAMPLES_PER_PROMPT": "2",
    "CHATLOOP_PPO__MAX_NEW_TOKENS": "12",
    "CHATLOOP_PPO__EPOCHS": "1",
    "CHATLOOP_PPO__MINIBATCH_SIZE": "4",
    "CHATLOOP_GATE__EVAL_PROMPTS": "4",
    "CHATLOOP_GATE__HELD_OUT_PAIRS": "8",
}
"""The environment of a training round small enough for a CPU test run: it proves the mechanics, not quality."""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` in a thread of its own: once a test has used Playwright's sync API, the main thread has an
    event loop running, and ``asyncio.run`` there fails, so that tests would pass or fail by their order."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@dataclass
class RedisHandle:
    """A real redis-server that tests may stop and start again, as a fault would."""

    folder: Path
    server: LocalRedis

    @classmethod
    def start(cls, folder: Path) -> RedisHandle:
        return cls(folder=folder, server=start_local_redis(folder))

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def restart(self) -> None:
        self.server.stop()
        self.server = start_local_redis(self.folder)


@dataclass
class ServerHandle:
    base_url: str
    user_key: str
    admin_key: str
    redis: RedisHandle
    log_path: Path

    def http(self, key: str | None = LOCAL_API_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=120)

    def recent_events(self, count: int = 50) -> list[dict]:
        """The newest feedback events as the server logged them, newest first."""
        entries = self.redis.client().xrevrange(keys.EVENTS_STREAM, count=count)
        return [json.loads(fields["event"]) for _, fields in entries]


def fill_to_maxmemory(client: redis.Redis) -> None:
    """Redis at its ``maxmemory``, under the policy that evicts nothing: every write that needs memory fails until
    ``client.config_set("maxmemory", "0")``."""
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(int(client.info("memory")["used_memory"]) + 256 * 1024))
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for i in range(10_000):
            client.set(f"filler:{i}", "x" * 4096)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_ready(response: httpx.Response) -> bool:
    return response.status_code == 200


def engine_loaded(response: httpx.Response) -> bool:
    """Whether ``/ready`` says more than that the engine is loading: ready, or not ready for another reason."""
    return is_ready(response) or response.json()["error"]["code"] != "engine_loading"


def wait_ready(
    base_url: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    until: Callable[[httpx.Response], bool] = is_ready,
) -> None:
    """Until the server's ``/ready`` answers as ``until`` wants (by default: ready)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if until(httpx.get(f"{base_url}/ready", timeout=2)):
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    pytest.fail(f"server not ready after {READY_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")


def start_server(
    tmp_path: Path,
    redis_url: str,
    model_path: Path,
    extra_env: dict[str, str] | None = None,
    until: Callable[[httpx.Response], bool] = is_ready,
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``chatloop serve`` on a free port with both user keys and the tests' feedback limits, once it is ready (or
    its ``/ready`` answers as ``until`` wants)."""
    port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "CHATLOOP_DATA_DIR": str(tmp_path / "data"),
        "CHATLOOP_MODEL": str(model_path),
        "CHATLOOP_API_KEYS": f"{LOCAL_API_KEY},{OTHER_USER_KEY}",
        "CHATLOOP_ADMIN_KEY": LOCAL_ADMIN_KEY,
        "CHATLOOP_SECRET_KEY": SECRET_KEY,
        "CHATLOOP_FEEDBACK_PER_MINUTE": str(FEEDBACK_PER_MINUTE),
        "CHATLOOP_PAIRS_PER_HOUR": str(PAIRS_PER_HOUR),
        **(extra_env or {}),
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "client.cli", "serve", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop_server stops the engine's processes with it
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, process, log_path, until)
    except BaseException:
        stop_server(process)
        raise
    return process, base_url, log_path


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """The server and every process it started: stopped alone while its engine was still starting, the engine's
    worker outlived it and kept its gigabytes."""
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(process, signal.SIGKILL)
    process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


@dataclass
class InProcess:
    """The app as its lifespan builds it, minus the engine, over HTTP in the test's event loop; and its Redis."""

    app: FastAPI
    http: httpx.AsyncClient
    client: aioredis.Redis
    store: redis.Redis
    """A plain client, to arrange data and read what the routes wrote."""


@asynccontextmanager
async def in_process(settings: Settings, origin: str = "http://test") -> AsyncIterator[InProcess]:
    """``settings`` must name a Redis (``redis_url``); the app never starts the engine, so chat answers 503."""
    from server.app import attach_redis, create_app  # imports vLLM: only the tests that build an app pay for it

    app = create_app(settings)
    client = aioredis.from_url(settings.redis_url)
    store = redis.Redis.from_url(settings.redis_url)
    attach_redis(app, client, store)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=origin) as http:
            yield InProcess(app, http, client, store)
    finally:
        await client.aclose()
        store.close()
