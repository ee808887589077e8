"""A vLLM worker extension that makes LoRA support free on the CPU backend in steps where no request uses an adapter.

Why our own patch: with ``enable_lora`` on, vLLM 0.32's CPU backend runs its LoRA kernels on every decode step,
adapter or not (only its prefill path checks), which cut plain generation from 410 to 190 tokens/s here
(docs/benchmarks.md). The active policy version is served merged, with no adapter, so that cost would fall on
nearly every request just so that a canary can run beside it. vLLM's GPU kernels already skip such steps.

vLLM imports this module in its worker process through ``server/worker_extension.py``; the import applies the patch
there (the server process itself runs no model). It touches ``PunicaWrapperCPU`` and the linear
layers' LoRA wrappers, which consult the CPU wrapper's flag: on GPUs the flag is never set and they run as shipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vllm.lora.layers.column_parallel_linear import ColumnParallelLinearWithLoRA
from vllm.lora.layers.row_parallel_linear import RowParallelLinearWithLoRA
from vllm.lora.punica_wrapper.punica_base import PunicaWrapperBase
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

SKIPPABLE = ("add_lora_linear", "add_lora_logits", "add_lora_embedding", "add_shrink", "add_expand")


def _track_adapters(self: PunicaWrapperCPU, mapping: Any, *args: Any, **kwargs: Any) -> None:
    PunicaWrapperBase.update_metadata(self, mapping, *args, **kwargs)
    self.step_uses_lora = any(lora_id > 0 for lora_id in mapping.index_mapping)  # 0: this token has no adapter


def _skip_when_idle(kernel: Callable[..., Any]) -> Callable[..., Any]:
    def run(self: PunicaWrapperCPU, *args: Any, **kwargs: Any) -> Any:
        if not getattr(self, "step_uses_lora", True):
            return None
        return kernel(self, *args, **kwargs)

    return run


def _base_layer_when_idle(forward: Callable[..., Any]) -> Callable[..., Any]:
    """The wrapped linear layer's own forward in steps without an adapter: the wrapper's Python around it (about
    seven calls and lookups per layer, 120 layers in the default model) cost 1-1.5 ms per decode step here."""

    def run(self: Any, input_: Any) -> Any:
        if not getattr(self.punica_wrapper, "step_uses_lora", True):
            return self.base_layer.forward(input_)
        return forward(self, input_)

    return run


def _patch() -> None:
    if getattr(PunicaWrapperCPU, "_chatloop_patched", False):
        return
    PunicaWrapperCPU.update_metadata = _track_adapters
    for name in SKIPPABLE:
        setattr(PunicaWrapperCPU, name, _skip_when_idle(getattr(PunicaWrapperCPU, name)))
    for layer in (ColumnParallelLinearWithLoRA, RowParallelLinearWithLoRA):
        layer.forward = _base_layer_when_idle(layer.forward)
    PunicaWrapperCPU._chatloop_patched = True


_patch()
