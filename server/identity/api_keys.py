"""Managed API keys: made by an admin for an app or an operator, or by a person for their own scripts.

The secret is shown once, when the key is made; Redis keeps its hash (the lookup key) and a record of what the key
may do: its role, its limits, its expiry, and the account it speaks for, if any. Names are unique per owner (an
admin's keys have none). Servers cache what they read for ``ROLLOUT__RECONCILE_SECONDS`` (``server/auth.py``), so a
revoked key stops working everywhere within that time.
"""

from __future__ import annotations

from typing import Literal

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.exceptions import WatchError

from core import keys
from core.errors import Conflict, NotFound
from server.identity.tokens import new_token, token_hash

KEY_PREFIX = "sk-cl-"


class ManagedKey(BaseModel):
    name: str
    role: Literal["user", "admin"] = "user"
    owner: str | None = None
    """The account the key speaks for: its answers are the account's, whatever ``user`` a request names."""
    chat_per_minute: int | None = None
    max_concurrent: int | None = None
    pairs_per_hour: int | None = None
    """None: the settings' default for keys (``LIMITS``)."""
    train: bool = False
    """Whether feedback through this key may become training data (``feedback/eligibility.py``): an app's key
    vouches for the ``user``s it names, so an admin turns it on for the apps they trust. A person's key follows
    the person's account."""
    expires_at: float | None = None
    created: float

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def _index(owner: str | None, name: str) -> str:
    return f"{owner or ''}/{name}"


def not_found(name: str) -> NotFound:
    return NotFound(f"No API key named '{name}'.", param="name", code="api_key_not_found")


class ApiKeys:
    def __init__(self, client: aioredis.Redis):
        self.client = client

    async def create(self, key: ManagedKey) -> str:
        """Store the key and return its secret, the one time anyone sees it."""
        secret = new_token(KEY_PREFIX)
        index = _index(key.owner, key.name)
        async with self.client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(keys.API_KEY_NAMES)
                if await pipe.hexists(keys.API_KEY_NAMES, index):
                    raise Conflict(
                        f"An API key named '{key.name}' exists already.", param="name", code="api_key_exists"
                    )
                pipe.multi()
                pipe.hset(keys.API_KEY_NAMES, index, token_hash(secret))
                pipe.hset(keys.API_KEYS, token_hash(secret), key.model_dump_json())
                await pipe.execute()
            except WatchError:
                raise Conflict("API keys changed meanwhile; retry.", param="name", code="api_key_exists") from None
        return secret

    async def lookup(self, secret: str) -> ManagedKey | None:
        raw = await self.client.hget(keys.API_KEYS, token_hash(secret))
        return None if raw is None else ManagedKey.model_validate_json(raw)

    async def list(self, owner: str | None = None, *, everyone: bool = False) -> list[ManagedKey]:
        found = [ManagedKey.model_validate_json(raw) for raw in await self.client.hvals(keys.API_KEYS)]
        mine = [k for k in found if everyone or k.owner == owner]
        return sorted(mine, key=lambda k: k.created)

    async def revoke(self, name: str, owner: str | None) -> str:
        """Delete the key; returns its hash, under which servers cache it."""
        raw = await self.client.hget(keys.API_KEY_NAMES, _index(owner, name))
        if raw is None:
            raise not_found(name)
        digest = raw.decode()
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(keys.API_KEY_NAMES, _index(owner, name))
        pipe.hdel(keys.API_KEYS, digest)
        await pipe.execute()
        return digest
