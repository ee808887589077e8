"""Build the one vLLM engine a server process embeds.

``AsyncLLM`` runs its engine core in a worker process; this process only tokenizes, schedules requests into it
and streams results out, the same split as vLLM's own OpenAI server, which our benchmark compares against.
"""

from __future__ import annotations

import logging
import os

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
    # The CPU worker reads its KV cache size from the environment only; without it, it claims 92% of NUMA node 0.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.kv_cache_gib))
    log.info("starting engine", extra={"model": str(settings.model_path), "dtype": settings.dtype})
    return AsyncLLM.from_engine_args(engine_args(settings))
