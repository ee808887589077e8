"""Names of policy versions, as clients see them in `model` and `system_fingerprint`.

A request's `model` is either the routed alias (``chatloop``) or one version pinned as ``alias@version``.
"""

from __future__ import annotations

from pathlib import Path

BASE_VERSION = "base"
"""The base model with no adapter: the root of every version's lineage."""

PIN_SEPARATOR = "@"

ADAPTER_DIRNAME = "adapter"
"""In a version's folder: its PEFT LoRA adapter over the base model."""

TRAINEES_DIRNAME = ".trainees"
"""In the versions folder: adapters a trainer is still training, saved there for the serving engine to sample PPO's
rollouts with (``server/rollouts_api/``). A hidden name: no version is called that."""


def pinned_name(alias: str, version: str) -> str:
    return f"{alias}{PIN_SEPARATOR}{version}"


def split_model_name(name: str) -> tuple[str, str | None]:
    """``"chatloop@v3"`` -> ``("chatloop", "v3")``; ``"chatloop"`` -> ``("chatloop", None)``."""
    alias, separator, version = name.partition(PIN_SEPARATOR)
    return alias, (version if separator else None)


def adapter_path(versions_dir: Path, version: str) -> Path | None:
    """The version's LoRA adapter folder; None for the base model, which has none."""
    return None if version == BASE_VERSION else versions_dir / version / ADAPTER_DIRNAME


def version_order(version: str) -> int:
    """Sort key: ``base`` first, then v1, v2, ... by number."""
    return 0 if version == BASE_VERSION else int(version.removeprefix("v"))
