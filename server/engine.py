"""Build the one vLLM engine a server process embeds.

``AsyncLLM`` runs its engine core in a worker process; this process only tokenizes, schedules requests into it
and streams results out, the same split as vLLM's own OpenAI server, which our benchmark compares against. What
the CPU backend needs beside it (the placement of the processes, our plugin and worker extension) is in
``server/cpu/``.
"""

from __future__ import annotations

import logging
import os

import torch
from vllm.config import StructuredOutputsConfig
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.platforms import current_platform
from vllm.v1.engine.async_llm import AsyncLLM

from core.config import Settings
from core.errors import SetupError

log = logging.getLogger(__name__)

X86_WITHOUT_AVX512 = ("AVX2", "NO AVX")
"""What ``torch.backends.cpu.get_cpu_capability()`` says on x86 CPUs where bfloat16 is emulated."""
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for ``max_lora_rank``."""


def max_lora_rank(settings: Settings) -> int:
    """Room for a version served as its difference to the active one: a LoRA of twice the training rank."""
    needed = 2 * settings.ppo.lora_rank
    return next((rank for rank in LORA_RANKS if rank >= needed), LORA_RANKS[-1])


def engine_dtype(settings: Settings) -> str:
    """The configured dtype, or for ``auto`` the one this machine computes fastest.

    vLLM's own ``auto`` takes the model's dtype (bfloat16 for the default model) on any CPU. Its CPU kernels
    compute bfloat16 with AVX-512 (there: 410 tokens/s against 260 in float32), but an x86 CPU with AVX2 alone
    emulates it: 22 tokens/s against 78 in float32 on such a machine here (16 streams; docs/benchmarks.md).
    """
    if settings.dtype != "auto":
        return settings.dtype
    if current_platform.is_cpu() and torch.backends.cpu.get_cpu_capability() in X86_WITHOUT_AVX512:
        return "float32"
    return "bfloat16"


def engine_args(settings: Settings) -> AsyncEngineArgs:
    return AsyncEngineArgs(
        model=str(settings.model_path),
        dtype=engine_dtype(settings),
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        enforce_eager=settings.enforce_eager,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        seed=0,
        # Compact JSON only: with whitespace allowed, a small model under a JSON grammar can emit blank lines
        # until max_tokens. xgrammar reads this engine-wide setting, not the per-request flag.
        structured_outputs_config=StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True),
        # Canaries and pinned versions run as adapters beside the merged active version (server/versions/).
        enable_lora=True,
        max_lora_rank=max_lora_rank(settings),
        max_loras=settings.rollout.max_adapters,
        worker_extension_cls="server.worker_extension.ChatloopWorker",
    )


def build_engine(settings: Settings) -> AsyncLLM:
    if not (settings.model_path / "config.json").exists():
        raise SetupError(
            f"no model at {settings.model_path}: run `make setup` (or `chatloop prepare-model`), "
            "or set CHATLOOP_MODEL to a Hugging Face model folder"
        )
    # The CPU worker reads its KV cache size from the environment only; without it, it claims 92% of NUMA node 0.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.kv_cache_gib))
    log.info("starting engine", extra={"model": str(settings.model_path), "dtype": engine_dtype(settings)})
    return AsyncLLM.from_engine_args(engine_args(settings))
