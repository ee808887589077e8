"""The files the engine loads for a policy version: its merged weights, or its difference to the active version.

Every version is a LoRA adapter over the fixed base model, so its weights are ``W + s·B·A``. The active version
is served merged (the base's tensors plus each LoRA's product), because generating through an adapter is much
slower on the CPU backend (0.37x the speed). Any other version V is served as an adapter on top of the active version
X: since both are ``W`` plus a low-rank product, ``V - X = s_V·B_V·A_V - s_X·B_X·A_X`` is exactly a LoRA of
rank ``r_V + r_X`` (``[s_V·B_V, -s_X·B_X]`` times ``[A_V; A_X]``), computed here in fp32 with the scales folded into B.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core.checksums import sync_folder_entry, sync_tree

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LORA_A, LORA_B = ".lora_A.weight", ".lora_B.weight"
PEFT_PREFIX = "base_model.model."
"""PEFT's prefix before a module's name in the base model."""


class BrokenVersion(Exception):
    """A version's files are missing, corrupt, or not a LoRA this server can serve."""


def build_merged(base: Path, adapter: Path | None, out: Path) -> Path:
    """``out`` holds the full weights of base + adapter (the base's own when ``adapter`` is None).

    Merged tensor by tensor in the safetensors files, ``W + s·B·A`` in fp32 then back to the file's dtype (what
    PEFT's ``merge_and_unload`` computes), without building the model: about a second for the default model
    rather than ten, so that a promotion is not held up by it. Written under a temporary name and renamed, so a
    crash never leaves a half-written folder that looks finished.
    """
    if out.exists():
        return out
    deltas = {
        module.removeprefix(PEFT_PREFIX) + ".weight": factors for module, factors in _scaled_factors(adapter)[0].items()
    }
    shards = sorted(base.glob("*.safetensors"))
    if not shards:
        raise BrokenVersion(f"no safetensors weights in {base}")
    with _building(out) as staging:
        for shard in shards:
            tensors = load_file(shard)
            for name in deltas.keys() & tensors.keys():
                a, scaled_b = deltas.pop(name)
                tensors[name] = (tensors[name].float() + scaled_b @ a).to(tensors[name].dtype)
            save_file(tensors, staging / shard.name, metadata={"format": "pt"})
        if deltas:
            raise BrokenVersion(f"the adapter at {adapter} adapts weights the base model lacks: {sorted(deltas)[:3]}")
        for extra in base.glob("*.json"):  # config and shard index travel with the weights
            shutil.copy2(extra, staging / extra.name)
    return out


STALE_BUILD_S = 3600.0
"""A build folder this old was left by a process that died: no build takes an hour."""


@contextmanager
def _building(out: Path) -> Iterator[Path]:
    """A private folder beside ``out`` to build in (replicas sharing a data volume may build the same version at
    once), renamed into place once the block is done and its files are on the disk; when another builder got there
    first, theirs is kept (the content is the same). A build that fails (a full disk among other things) removes
    its folder: nothing half-built is left behind, let alone served."""
    staging = out.with_name(f".{out.name}.{uuid.uuid4().hex}.partial")
    staging.mkdir(parents=True)
    try:
        yield staging
        sync_tree(staging)
        staging.rename(out)
        sync_folder_entry(out)
    except OSError:
        if not out.exists():
            shutil.rmtree(staging, ignore_errors=True)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)


def remove_stale_builds(cache: Path, now: float) -> list[Path]:
    """Remove build folders under ``cache`` left by a process killed while building; those of builds that may still
    be running elsewhere (younger than ``STALE_BUILD_S``) stay. The removed ones, for the log."""
    stale = [
        path for path in cache.glob("*/.*.partial") if path.is_dir() and now - path.stat().st_mtime > STALE_BUILD_S
    ]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _scaled_factors(adapter: Path | None) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict]:
    """Module name -> (A, s·B) in fp32, and the adapter's config; nothing for the base model."""
    if adapter is None:
        return {}, {}
    try:
        config = json.loads((adapter / ADAPTER_CONFIG).read_text())
        tensors = load_file(adapter / ADAPTER_WEIGHTS)
    except (OSError, ValueError, SafetensorError) as exc:
        raise BrokenVersion(f"cannot read the adapter at {adapter}: {exc}") from exc
    if config.get("peft_type") != "LORA" or config.get("use_dora"):
        raise BrokenVersion(f"{adapter} is not a plain LoRA adapter")
    factors = {}
    for key, a in tensors.items():
        if not key.endswith(LORA_A):
            continue
        module = key.removesuffix(LORA_A)
        rank = a.shape[0]
        short = module.rsplit(".", 1)[-1]
        alpha = config.get("alpha_pattern", {}).get(short, config["lora_alpha"])
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        factors[module] = (a.float(), tensors[module + LORA_B].float() * scale)
    if not factors:
        raise BrokenVersion(f"{adapter} holds no LoRA weights")
    return factors, config


def build_difference(new: Path | None, old: Path | None, out: Path) -> Path:
    """A PEFT LoRA folder whose weights are (new - old): served over the merged ``old``, it gives ``new``."""
    if out.exists():
        return out
    new_factors, new_config = _scaled_factors(new)
    old_factors, old_config = _scaled_factors(old)
    modules = sorted(new_factors.keys() | old_factors.keys())
    rank = max(_rank(new_factors) + _rank(old_factors), 1)
    tensors = {}
    for module in modules:
        a_parts, b_parts = [], []
        for factors, sign in ((new_factors, 1.0), (old_factors, -1.0)):
            if module in factors:
                a, b = factors[module]
                a_parts.append(a)
                b_parts.append(sign * b)
        a, b = torch.cat(a_parts, dim=0), torch.cat(b_parts, dim=1)
        padding = rank - a.shape[0]  # a module adapted on one side only: zero rows keep one rank throughout
        tensors[module + LORA_A] = torch.nn.functional.pad(a, (0, 0, 0, padding)).contiguous()
        tensors[module + LORA_B] = torch.nn.functional.pad(b, (0, padding)).contiguous()
    config = {**(old_config or {}), **(new_config or {})}
    targets = sorted({module.rsplit(".", 1)[-1] for module in modules})
    config.update(r=rank, lora_alpha=rank, use_rslora=False, rank_pattern={}, alpha_pattern={}, target_modules=targets)
    with _building(out) as staging:
        save_file(tensors, staging / ADAPTER_WEIGHTS)
        (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
    return out


def _rank(factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> int:
    return max((a.shape[0] for a, _ in factors.values()), default=0)
