"""Optimistic transactions, tried a bounded number of times.

A change decided from what it read (``WATCH``/``MULTI``/``EXEC``, or ``feedback/commit.py``'s script) is tried
again when a concurrent writer changed that; a loop without end would hold its request, or the trainer, for as long
as others keep writing. Past the bound the caller gets a refusal it can retry (``Contended``: a 503 with
``Retry-After`` over HTTP), with nothing written.
"""

from __future__ import annotations

from collections.abc import Iterator

from core.errors import Contended

MAX_ATTEMPTS = 64
"""Tries of one change. Each conflicting try means another writer succeeded, so this many in a row is a storm of
writes to one conversation or to the routing, which a client's retry later resolves better than a spin now."""


def attempts(what: str, limit: int = MAX_ATTEMPTS) -> Iterator[int]:
    """The numbers of the tries, for a loop that leaves with ``break`` or ``return`` once its change applied; when
    all ``limit`` conflicted, ``Contended`` naming ``what`` (for example, "the routing")."""
    yield from range(limit)
    raise Contended(
        f"{what} kept changing while this request tried to change it ({limit} tries); nothing was written. Try again.",
        retry_after_s=1,
        code="contended",
    )
