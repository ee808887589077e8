"""The event loop watchdog (``server/loop_watchdog.py``) names what blocks the loop, once per stall."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from server.loop_watchdog import LoopWatchdog
from tests.helpers import run_async


def block_the_loop(seconds: float) -> None:
    time.sleep(seconds)


def test_a_blocked_loop_is_reported_once_with_its_stack(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        watchdog = asyncio.create_task(LoopWatchdog(threshold_s=0.5).tick())
        await asyncio.sleep(0.3)  # turning freely: nothing to report
        block_the_loop(2.0)  # long enough for the watchdog thread to be scheduled on a busy machine
        await asyncio.sleep(0.3)
        watchdog.cancel()

    with caplog.at_level(logging.WARNING, logger="server.loop_watchdog"):
        run_async(scenario())
    (stall,) = [r for r in caplog.records if r.getMessage() == "event loop stalled"]
    assert "block_the_loop" in stall.stack and stall.stalled_s > 0.5
