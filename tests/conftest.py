"""Fixtures that start the real things: a redis-server, and ``chatloop serve`` with its vLLM engine.

One server process serves the whole test session (an engine takes about 40 s to start on this CPU). Its Redis is
a private redis-server in a temporary folder, so that tests see exactly what the server wrote.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from core.config import LOCAL_ADMIN_KEY, LOCAL_API_KEY, Settings
from core.local_redis import LocalRedis, start_local_redis

READY_TIMEOUT_S = 300
OTHER_USER_KEY = "sk-chatloop-other"
"""A second user key: its callers must not reach answers given to the first."""
FEEDBACK_PER_MINUTE = 20
PAIRS_PER_HOUR = 3
REPO = Path(__file__).resolve().parent.parent


@dataclass
class RedisHandle:
    """A real redis-server that tests may stop and start again, as a fault would."""

    folder: Path
    server: LocalRedis

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def model_path() -> Path:
    path = Settings(_env_file=None).model_path
    if not path.is_absolute():
        path = REPO / path
    if not (path / "config.json").exists():
        pytest.fail(f"no model at {path}: run `make setup` first")
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHandle]:
    folder = tmp_path_factory.mktemp("redis")
    handle = RedisHandle(folder=folder, server=start_local_redis(folder))
    yield handle
    handle.server.stop()


def wait_ready(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    pytest.fail(f"server not ready after {READY_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")


def start_server(
    tmp_path: Path, redis_url: str, model_path: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "CHATLOOP_DATA_DIR": str(tmp_path / "data"),
        "CHATLOOP_MODEL": str(model_path),
        "CHATLOOP_API_KEYS": f"{LOCAL_API_KEY},{OTHER_USER_KEY}",
        "CHATLOOP_ADMIN_KEY": LOCAL_ADMIN_KEY,
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
        )
    base_url = f"http://127.0.0.1:{port}"
    wait_ready(base_url, process, log_path)
    return process, base_url, log_path


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisHandle, model_path: Path
) -> Iterator[ServerHandle]:
    process, base_url, log_path = start_server(tmp_path_factory.mktemp("server"), redis_server.url, model_path)
    yield ServerHandle(base_url, LOCAL_API_KEY, LOCAL_ADMIN_KEY, redis_server, log_path)
    stop_server(process)
