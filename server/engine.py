"""Build the one vLLM engine a server process embeds.

``AsyncLLM`` runs its engine core in a worker process; this process only tokenizes, schedules requests into it
and streams results out, the same split as vLLM's own OpenAI server, which our benchmark compares against.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable

import psutil
from vllm.config import StructuredOutputsConfig
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.v1.engine.async_llm import AsyncLLM

from core.config import Settings

log = logging.getLogger(__name__)


def engine_args(settings: Settings) -> AsyncEngineArgs:
    return AsyncEngineArgs(
        model=str(settings.model_path),
        dtype=settings.dtype,
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        enforce_eager=settings.enforce_eager,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        seed=0,
        # Compact JSON only: with whitespace allowed, a small model under a JSON grammar can emit blank lines
        # until max_tokens. xgrammar reads this engine-wide setting, not the per-request flag.
        structured_outputs_config=StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True),
    )


def build_engine(settings: Settings) -> AsyncLLM:
    if not (settings.model_path / "config.json").exists():
        raise RuntimeError(
            f"no model at {settings.model_path}: run `make setup` (or `chatloop prepare-model`), "
            "or set CHATLOOP_MODEL to a Hugging Face model folder"
        )
    # The CPU worker reads its KV cache size from the environment only; without it, it claims 92% of NUMA node 0.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.kv_cache_gib))
    log.info("starting engine", extra={"model": str(settings.model_path), "dtype": settings.dtype})
    return AsyncLLM.from_engine_args(engine_args(settings))


def keep_off_engine_cores(also: Iterable[int] = ()) -> set[int]:
    """Move this process's threads (and the processes in ``also``) off the cores vLLM's CPU worker is bound to.

    On the CPU backend the worker binds its OpenMP threads to all cores but a reserved few, and every forward pass
    waits for its slowest thread. An HTTP process that wakes on a worker core to stream a token stalls the whole
    step; on a reserved core it only takes time from the scheduler's busy-wait. Returns the cores left to us
    (empty, and nothing changed, where the worker is not bound, as on GPUs).
    """
    ours = os.sched_getaffinity(0)
    bound: set[int] = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cores = set(child.cpu_affinity())
            if cores < ours:
                bound |= cores
    free = ours - bound
    if not bound or not free:
        return set()
    pids = [int(tid) for tid in os.listdir("/proc/self/task")] + list(also)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, free)
    log.info("HTTP layer kept off the engine's cores", extra={"engine_cores": sorted(bound), "ours": sorted(free)})
    return free
