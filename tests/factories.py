"""Synthetic policy versions for the tests and benchmarks of serving: LoRA adapters with random weights change
the answers, which is all that routing and weight swaps need, without minutes of training."""

from __future__ import annotations

import time
from pathlib import Path

import redis
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from core.policy import ADAPTER_DIRNAME
from core.registry import Registry, Version
from trainer.ppo import LORA_TARGETS


def random_version(
    client: redis.Redis, versions_dir: Path, model_path: Path, seed: int, scale: float = 1.0, corrupt: bool = False
) -> str:
    """Register a candidate whose adapter has random weights (B scaled by ``scale``), or a corrupt weights file."""
    registry = Registry(client)
    version_id = registry.next_id()
    folder = versions_dir / version_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS, init_lora_weights=False)
    peft = get_peft_model(model, lora)
    with torch.no_grad():
        for name, parameter in peft.named_parameters():
            if "lora_B" in name:
                parameter.mul_(scale)
    peft.save_pretrained(folder / ADAPTER_DIRNAME)
    if corrupt:
        (folder / ADAPTER_DIRNAME / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    version = Version(id=version_id, parent="base", state="candidate", artifact=str(folder), created=time.time())
    registry.register(version, who="test", why="random adapter")
    return version_id
