"""Fixtures of the fault-injection tests: each gets Redis servers of its own, since the faults (a flush, a restart,
a deleted stream) would take what other tests stored with them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import RedisHandle


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHandle]:
    """A private redis-server, started for one test and stopped after it."""
    handle = RedisHandle.start(tmp_path_factory.mktemp("fault-redis"))
    yield handle
    handle.server.stop()
