"""Every Redis key name the system uses, in one place.

All keys share the ``chatloop:`` prefix so that one Redis can host other data too. Keys of one completion are
built from its id alone, which keeps them usable on Redis Cluster (no multi-key operation spans two ids).
"""

from __future__ import annotations

PREFIX = "chatloop"

COMPLETIONS_STREAM = f"{PREFIX}:completions"
"""Append-only log of recorded completion ids, oldest first; the trainer reads real prompts from it."""


def completion_key(completion_id: str) -> str:
    """The JSON record of one completion."""
    return f"{PREFIX}:completion:{completion_id}"
