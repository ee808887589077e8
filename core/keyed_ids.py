"""The ids that name people in stored data, and each person's place in a canary split: keyed hashes (HMAC-SHA256
with the deployment's secret).

A plain hash of a key id and a ``user`` can be recomputed by anyone who guesses the ``user`` (an e-mail address, a
name), so an export or a copy of Redis would say who gave which feedback; and a plain hash of an id lets a caller
search for ids that land on the side of a canary split it wants. With the secret in the hash, neither works for
someone who does not hold the secret. Every process of a deployment must use the same secret: set
``CHATLOOP_SECRET_KEY``, or let the first process make one in the data folder, which they all share.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings

SECRET_FILENAME = "secret"


def load_secret(settings: Settings) -> bytes:
    """The configured secret, else the data folder's, made on first use. The file is linked into place only once
    written, so that a second process starting at the same moment reads the whole of it or makes none."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = settings.data_dir / SECRET_FILENAME
    if not path.exists():
        _make_secret(path)
    return path.read_bytes().strip()


def _make_secret(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{SECRET_FILENAME}-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32))
        file.flush()
        os.fsync(file.fileno())
    try:
        os.link(draft, path)
    except FileExistsError:
        pass  # another process made it first: theirs is the secret
    finally:
        draft.unlink()


@dataclass(frozen=True)
class KeyedIds:
    secret: bytes

    def _digest(self, purpose: str, *parts: str) -> bytes:
        message = "\0".join([purpose, *parts]).encode()
        return hmac.new(self.secret, message, hashlib.sha256).digest()

    def user_id(self, key_id: str, user: str | None) -> str:
        """Who an answer was given to and who gives feedback on it: a principal (API key or account) and the
        ``user`` it names (for an account, the account itself)."""
        return self._digest("user", key_id, user or "").hex()[:16]

    def principal_id(self, key_id: str) -> str:
        """An API key or an account, across all its ``user``s: what the per-principal caps count."""
        return self._digest("principal", key_id).hex()[:16]

    def user_name_id(self, user: str) -> str:
        """A ``user`` value under any key, for erasing it everywhere it was used."""
        return self._digest("user-name", user).hex()[:16]

    def split_point(self, canary: str, user_id: str) -> float:
        """A user's place in [0, 100) in the split of one canary: fixed while that canary runs, so a user sees one
        version and raising the share only adds users; drawn afresh for the next canary, so that one canary's
        users are not always the same people."""
        return int.from_bytes(self._digest("split", canary, user_id)[:8], "big") / 2**64 * 100
