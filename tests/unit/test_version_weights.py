"""A version served over another as the difference of their LoRAs (server/versions/weights.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from server.versions.weights import STALE_BUILD_S, BrokenVersion, build_difference, build_merged, remove_stale_builds

MODULES = ["base_model.model.model.layers.0.self_attn.q_proj", "base_model.model.model.layers.0.mlp.up_proj"]


def write_adapter(folder: Path, rank: int, alpha: int, seed: int, modules: list[str] = MODULES) -> dict:
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for module in modules:
        tensors[f"{module}.lora_A.weight"] = torch.randn(rank, 12, generator=generator)
        tensors[f"{module}.lora_B.weight"] = torch.randn(10, rank, generator=generator)
    folder.mkdir(parents=True)
    save_file(tensors, folder / "adapter_model.safetensors")
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": ["q_proj", "up_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return tensors


def delta(tensors: dict, module: str, scale: float) -> torch.Tensor:
    return scale * tensors[f"{module}.lora_B.weight"] @ tensors[f"{module}.lora_A.weight"]


def test_difference_is_exactly_new_minus_old(tmp_path: Path) -> None:
    new = write_adapter(tmp_path / "new", rank=4, alpha=8, seed=1)
    old = write_adapter(tmp_path / "old", rank=2, alpha=2, seed=2)
    out = build_difference(tmp_path / "new", tmp_path / "old", tmp_path / "diff")
    diff = load_file(out / "adapter_model.safetensors")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 6 and config["lora_alpha"] == 6  # scale 1: the scales are folded into B
    for module in MODULES:
        expected = delta(new, module, 8 / 4) - delta(old, module, 2 / 2)
        torch.testing.assert_close(delta(diff, module, 1.0), expected, rtol=1e-5, atol=1e-5)


def test_a_module_on_one_side_only_is_padded_to_the_common_rank(tmp_path: Path) -> None:
    new = write_adapter(tmp_path / "new", rank=4, alpha=4, seed=1)
    write_adapter(tmp_path / "old", rank=4, alpha=4, seed=2, modules=MODULES[:1])
    diff = load_file(
        build_difference(tmp_path / "new", tmp_path / "old", tmp_path / "diff") / "adapter_model.safetensors"
    )
    only_new = MODULES[1]
    assert diff[f"{only_new}.lora_A.weight"].shape == (8, 12)
    torch.testing.assert_close(delta(diff, only_new, 1.0), delta(new, only_new, 1.0))


def test_over_the_base_model_the_difference_is_the_version_itself(tmp_path: Path) -> None:
    new = write_adapter(tmp_path / "new", rank=4, alpha=8, seed=1)
    diff = load_file(build_difference(tmp_path / "new", None, tmp_path / "diff") / "adapter_model.safetensors")
    torch.testing.assert_close(delta(diff, MODULES[0], 1.0), delta(new, MODULES[0], 2.0))


def test_a_corrupt_adapter_is_a_broken_version(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "lora_alpha": 8, "r": 4}))
    (tmp_path / "bad" / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BrokenVersion, match="cannot read"):
        build_difference(tmp_path / "bad", None, tmp_path / "diff")
    assert not (tmp_path / "diff").exists()


def test_merged_weights_add_the_scaled_product_to_the_base(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    weights = {"model.layers.0.self_attn.q_proj.weight": torch.randn(10, 12), "model.norm.weight": torch.ones(12)}
    save_file(weights, base / "model.safetensors")
    (base / "config.json").write_text("{}")
    adapter = write_adapter(tmp_path / "adapter", rank=4, alpha=8, seed=1, modules=MODULES[:1])
    merged = load_file(build_merged(base, tmp_path / "adapter", tmp_path / "merged") / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(merged[name], weights[name] + delta(adapter, MODULES[0], 2.0))
    torch.testing.assert_close(merged["model.norm.weight"], weights["model.norm.weight"])
    assert (tmp_path / "merged" / "config.json").exists()


def test_an_adapter_for_another_architecture_is_a_broken_version(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    save_file({"model.norm.weight": torch.ones(12)}, base / "model.safetensors")
    write_adapter(tmp_path / "adapter", rank=4, alpha=8, seed=1)
    with pytest.raises(BrokenVersion, match="lacks"):
        build_merged(base, tmp_path / "adapter", tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_only_builds_left_long_ago_are_removed(tmp_path: Path) -> None:
    """A replica sharing the data volume may be building right now: its folder is young, and stays."""
    old, young, done = (tmp_path / "merged" / name for name in (".v1.a.partial", ".v2.b.partial", "v1"))
    for folder in (old, young, done):
        folder.mkdir(parents=True)
    os.utime(old, (1000.0, 1000.0))
    os.utime(done, (1000.0, 1000.0))
    assert remove_stale_builds(tmp_path, now=1000.0 + STALE_BUILD_S + 1) == [old]
    assert not old.exists() and young.exists() and done.exists()
