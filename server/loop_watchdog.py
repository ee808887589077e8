"""A watchdog on the server's event loop: when the loop stops turning for longer than a threshold, log what it is
stuck in.

Everything the API does runs on one event loop; a call that blocks it (a synchronous Redis command, a long
computation) stalls every request at once, and the symptoms show up elsewhere: Redis calls that all time out
together, streams that pause, health checks that fail. asyncio's debug mode reports slow callbacks only after they
return, and costs too much to leave on. Here a task notes the time a few times a second, and a thread that does not
need the loop checks it and, once per stall, logs the loop thread's stack while it is still stuck.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

from server import metrics

log = logging.getLogger(__name__)

TICK_S = 0.1


class LoopWatchdog:
    def __init__(self, threshold_s: float):
        self.threshold_s = threshold_s
        self.last_tick = time.monotonic()
        self._stopped = threading.Event()
        self._loop_thread = threading.get_ident()

    async def tick(self) -> None:
        """Run on the watched loop until cancelled."""
        self._loop_thread = threading.get_ident()
        thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        thread.start()
        try:
            while True:
                self.last_tick = time.monotonic()
                await asyncio.sleep(TICK_S)
        finally:
            self._stopped.set()

    def _watch(self) -> None:
        reported = False
        while not self._stopped.wait(self.threshold_s / 2):
            stalled = time.monotonic() - self.last_tick
            if stalled <= self.threshold_s:
                reported = False
            elif not reported:
                reported = True
                metrics.LOOP_STALLS.inc()
                log.warning("event loop stalled", extra={"stalled_s": round(stalled, 2), "stack": self._stack()})

    def _stack(self) -> str:
        frame = sys._current_frames().get(self._loop_thread)
        return "".join(traceback.format_stack(frame)[-12:]) if frame else ""
