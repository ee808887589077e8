"""Names of policy versions, as clients see them in `model` and `system_fingerprint`.

A request's `model` is either the routed alias (``chatloop``) or one version pinned as ``alias@version``.
"""

from __future__ import annotations

BASE_VERSION = "base"
"""The base model with no adapter: the root of every version's lineage."""

PIN_SEPARATOR = "@"


def pinned_name(alias: str, version: str) -> str:
    return f"{alias}{PIN_SEPARATOR}{version}"


def split_model_name(name: str) -> tuple[str, str | None]:
    """``"chatloop@v3"`` -> ``("chatloop", "v3")``; ``"chatloop"`` -> ``("chatloop", None)``."""
    alias, separator, version = name.partition(PIN_SEPARATOR)
    return alias, (version if separator else None)
