"""Placement of the processes around vLLM's CPU worker: everything else keeps off the cores it computes on
(``keep_off_engine_cores`` says why)."""

from __future__ import annotations

import contextlib
import logging
import os

import psutil

log = logging.getLogger(__name__)


def _affinity(process: psutil.Process) -> set[int]:
    try:
        return set(process.cpu_affinity())
    except psutil.Error:
        return set()  # gone meanwhile


def engine_cores(root: psutil.Process) -> set[int]:
    """The cores that vLLM's CPU worker, somewhere below ``root``, has bound itself to (none on GPUs)."""
    everything = _affinity(root)
    return {
        core for child in root.children(recursive=True) if _affinity(child) < everything for core in _affinity(child)
    }


def pin(process: psutil.Process, cores: set[int]) -> None:
    """Every thread of ``process`` to ``cores`` (affinity is per thread on Linux)."""
    with contextlib.suppress(psutil.Error):
        for thread in process.threads():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(thread.id, cores)


def keep_off_engine_cores() -> None:
    """Move this process and its unbound children (vLLM's scheduler process, a local Redis, the trainer that
    ``chatloop up`` starts) off the cores that vLLM's CPU worker is bound to.

    On the CPU backend the worker binds its OpenMP threads to all cores but a reserved few (meant for the
    scheduler), and every forward pass waits for its slowest thread: a process that wakes on a worker core, to
    stream a token or to schedule the next step, stalls the whole step. Nothing changes where the worker is not
    bound, as on GPUs. The trainer sizes its thread pool to the cores it is left (``trainer/loop.py``): a thread
    of its own on a worker core would slow both.
    """
    me = psutil.Process()
    everything = _affinity(me)
    bound = engine_cores(me)
    free = everything - bound
    if not bound or not free:
        return
    unbound = [child for child in me.children(recursive=True) if _affinity(child) == everything]
    for process in [me, *unbound]:
        pin(process, free)
    log.info("kept off the engine's cores", extra={"engine_cores": sorted(bound), "others": sorted(free)})
