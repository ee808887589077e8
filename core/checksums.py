"""What a version's files were when the trainer wrote them: a SHA-256 per file, recorded in its ``version.json``,
checked by a server before it loads them; and the writes made durable before a version's folder is renamed into
place.

A version reaches a server through a disk or a shared volume that can fail (a full disk, a half copy, bit rot); a
damaged adapter that still parses would otherwise be served to everyone. Hashing a 135M model's adapter takes
milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

VERSION_INFO = "version.json"
"""The file of a version folder that holds its metadata, the checksums among it."""


def file_digest(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def folder_digests(folder: Path, *parts: str) -> dict[str, str]:
    """The digest of every file under ``folder / part`` for each part, by its path relative to ``folder``."""
    return {
        path.relative_to(folder).as_posix(): file_digest(path)
        for part in parts
        for path in sorted((folder / part).rglob("*"))
        if path.is_file()
    }


def mismatches(folder: Path, part: str) -> list[str]:
    """The files under ``folder / part`` that differ from the digests in ``folder``'s ``version.json``: changed,
    missing or unrecorded. None are checked in a folder written before digests were recorded."""
    info = folder / VERSION_INFO
    if not info.is_file():
        return []
    recorded = {
        name: digest
        for name, digest in json.loads(info.read_text()).get("checksums", {}).items()
        if name.startswith(f"{part}/")
    }
    if not recorded:
        return []
    found = folder_digests(folder, part)
    return sorted(name for name in recorded.keys() | found.keys() if recorded.get(name) != found.get(name))


def sync_tree(folder: Path) -> None:
    """Every file and folder under ``folder``, and ``folder`` itself, on the disk: a rename after this cannot
    publish a folder whose files a crash would leave empty."""
    for path in sorted(folder.rglob("*"), reverse=True):
        _sync(path)
    _sync(folder)


def sync_folder_entry(path: Path) -> None:
    """The entry of ``path`` in its parent folder on the disk (after a rename)."""
    _sync(path.parent)


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
