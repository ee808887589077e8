"""A vLLM general plugin (entry point ``vllm.general_plugins`` in pyproject.toml): on the CPU backend, the scheduler
process sleeps while its worker computes a step, instead of spinning.

Why our own patch: vLLM's scheduler process hands each step to its CPU worker process through a shared-memory
queue and, until a second has passed since its last message, waits for the answer by spinning on
``sched_yield``. A step takes 17-90 ms here, so the scheduler spends most of a core waiting, and on a small machine
that core is the one the worker leaves to everything else: our HTTP process, Redis and the trainer. With a
competing process the spin can also take the core almost whole (the trainer got 5% of it in a closed-loop run,
docs/benchmarks.md). The writer already announces every message on a ZeroMQ socket, which vLLM's idle readers wait
on; the scheduler now always waits that way. The worker keeps spinning for its next step: it has its own cores,
and letting it sleep too cost 12 ms a step here (an idle virtual core is slow to wake). GPU steps are short and GPU
machines have cores to spare, so nothing changes there.

That announcement is sometimes lost (vLLM says so in ``shm_broadcast.py``, and re-reads the queue's flag every 5 s
to recover): an idle reader can afford that, a reader waiting for every step cannot. Measured here at one stream,
two steps in about 5,000 stalled the engine for 5.04 s each. So the scheduler's wait for a notification is capped at
``RECHECK_MS``, after which it re-reads the flag: a lost notification costs a step that long, and the extra wake-ups
cost a few microseconds each (``RECHECK_MS`` apart, only while a step runs).

vLLM loads general plugins in every process it starts (scheduler and workers) and in the process embedding the
engine; ``VLLM_PLUGINS`` selects among them (bench/serve.py runs vLLM's own server without it, as shipped).
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from vllm.distributed.device_communicators.shm_broadcast import SpinCondition
from vllm.platforms import current_platform

SCHEDULER_PROCESS = "EngineCore"
"""How vLLM names its scheduler processes (``EngineCore``, ``EngineCore_DP0``, ...)."""
RECHECK_MS = 2
"""The longest the scheduler waits for a notification before it looks at the queue itself."""


def _never_spin(init: Any) -> Any:
    def run(self: SpinCondition, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if self.is_reader:
            self.busy_loop_s = 0.0  # wait() then always blocks on the writer's notification

    return run


def _recheck_soon(wait: Any) -> Any:
    def run(self: SpinCondition, timeout_ms: int | None = None) -> None:
        wait(self, RECHECK_MS if timeout_ms is None else min(timeout_ms, RECHECK_MS))

    return run


def register() -> None:
    if not current_platform.is_cpu() or not multiprocessing.current_process().name.startswith(SCHEDULER_PROCESS):
        return
    if getattr(SpinCondition, "_chatloop_patched", False):
        return
    SpinCondition.__init__ = _never_spin(SpinCondition.__init__)
    SpinCondition.wait = _recheck_soon(SpinCondition.wait)
    SpinCondition._chatloop_patched = True
