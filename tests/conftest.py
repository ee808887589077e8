"""Fixtures that start the real things: a redis-server, and ``chatloop serve`` with its vLLM engine.

One server process serves the whole test session (an engine takes about 40 s to start on this CPU). Its Redis is
a private redis-server in a temporary folder, so that tests see exactly what the server wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import LOCAL_ADMIN_KEY, LOCAL_API_KEY, Settings
from tests.helpers import REPO, RedisHandle, ServerHandle, start_server, stop_server


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
    handle = RedisHandle.start(tmp_path_factory.mktemp("redis"))
    yield handle
    handle.server.stop()


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisHandle, model_path: Path
) -> Iterator[ServerHandle]:
    process, base_url, log_path = start_server(tmp_path_factory.mktemp("server"), redis_server.url, model_path)
    yield ServerHandle(base_url, LOCAL_API_KEY, LOCAL_ADMIN_KEY, redis_server, log_path)
    stop_server(process)
