"""Fault: the disk fills up while a server builds a version's merged weights or a trainer writes a version, on a
real filesystem too small for them (a 2 MiB tmpfs; the tests run as root, as CI does).

Promise: an error that says why; no partial folder is left behind, let alone taken for a finished one (the server
then goes on serving what it had: ``server/versions/manager.py`` keeps it on any load error).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.versions.weights import build_merged
from trainer.artifacts import write_version


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_merged_weights_that_do_not_fit_leave_nothing(small_disk: Path, model_path: Path) -> None:
    with pytest.raises(Exception, match="No space left on device"):  # safetensors says it in its own error
        build_merged(model_path, None, small_disk / "merged" / "v1")
    assert list((small_disk / "merged").iterdir()) == []


class Saves:
    """What a round saves, at its real size: a policy adapter and a reward model that write ``size`` bytes each."""

    def __init__(self, size: int):
        self.size = size

    def save_pretrained(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"\0" * self.size)

    save = save_pretrained


def test_a_version_that_does_not_fit_leaves_nothing(small_disk: Path) -> None:
    versions = small_disk / "versions"
    with pytest.raises(OSError):
        write_version(versions, "v1", Saves(3 << 20), Saves(3 << 20), {"id": "v1"})
    assert list(versions.iterdir()) == []
    write_version(versions, "v1", Saves(1024), Saves(1024), {"id": "v1"})  # room again: it is written whole
    assert sorted(path.name for path in versions.iterdir()) == ["v1"]
