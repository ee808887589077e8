"""A version's recorded checksums catch every change to its files: a changed byte, a missing file, an extra one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.checksums import VERSION_INFO, folder_digests, mismatches, sync_tree


def version_folder(root: Path) -> Path:
    (root / "adapter" / "nested").mkdir(parents=True)
    (root / "adapter" / "weights.safetensors").write_bytes(bytes(range(256)))
    (root / "adapter" / "nested" / "config.json").write_text("{}")
    (root / "reward_model").mkdir()
    (root / "reward_model" / "head.pt").write_bytes(b"head")
    digests = folder_digests(root, "adapter", "reward_model")
    (root / VERSION_INFO).write_text(json.dumps({"id": "v1", "checksums": digests}))
    sync_tree(root)
    return root


def test_an_intact_folder_matches_its_checksums(tmp_path: Path) -> None:
    folder = version_folder(tmp_path)
    assert sorted(json.loads((folder / VERSION_INFO).read_text())["checksums"]) == [
        "adapter/nested/config.json",
        "adapter/weights.safetensors",
        "reward_model/head.pt",
    ]
    assert mismatches(folder, "adapter") == [] and mismatches(folder, "reward_model") == []


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda f: (f / "adapter" / "weights.safetensors").write_bytes(bytes(255) + b"x"), "weights.safetensors"),
        (lambda f: (f / "adapter" / "nested" / "config.json").unlink(), "nested/config.json"),
        (lambda f: (f / "adapter" / "extra.bin").write_bytes(b""), "extra.bin"),
    ],
    ids=["changed", "missing", "extra"],
)
def test_each_kind_of_damage_names_its_file(tmp_path: Path, damage, named: str) -> None:
    folder = version_folder(tmp_path)
    damage(folder)
    assert mismatches(folder, "adapter") == [f"adapter/{named}"]
    assert mismatches(folder, "reward_model") == [], "a part is checked on its own"


def test_a_folder_written_before_checksums_is_not_held_against(tmp_path: Path) -> None:
    folder = version_folder(tmp_path)
    (folder / VERSION_INFO).write_text(json.dumps({"id": "v1"}))
    (folder / "adapter" / "weights.safetensors").write_bytes(b"anything")
    assert mismatches(folder, "adapter") == []
    (folder / VERSION_INFO).unlink()
    assert mismatches(folder, "adapter") == []
