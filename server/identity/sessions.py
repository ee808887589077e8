"""Signed-in browsers and one-time sign-in links.

A session is a random token in an ``HttpOnly``, ``SameSite=Strict`` cookie; Redis keeps only its hash, naming the
account, with an expiry, and the account's set of sessions lets an admin or the person end all of them at once.
A sign-in link's token is used once (``GETDEL``) within its lifetime.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from core import keys
from server.identity.tokens import new_token, token_hash

COOKIE = "chatloop_session"


class Sessions:
    def __init__(self, client: aioredis.Redis, lifetime_s: float):
        self.client = client
        self.lifetime_s = int(lifetime_s)

    async def start(self, account: str) -> str:
        token = new_token()
        digest = token_hash(token)
        pipe = self.client.pipeline(transaction=True)
        pipe.set(keys.session_key(digest), account, ex=self.lifetime_s)
        pipe.sadd(keys.account_sessions_key(account), digest)
        pipe.expire(keys.account_sessions_key(account), self.lifetime_s)
        await pipe.execute()
        return token

    async def account(self, token: str) -> str | None:
        name = await self.client.get(keys.session_key(token_hash(token)))
        return None if name is None else name.decode()

    async def any(self, account: str) -> bool:
        """Whether the account has signed in within a session's lifetime."""
        return bool(await self.client.exists(keys.account_sessions_key(account)))

    async def end(self, token: str) -> None:
        digest = token_hash(token)
        name = await self.client.getdel(keys.session_key(digest))
        if name is not None:
            await self.client.srem(keys.account_sessions_key(name.decode()), digest)

    async def end_all(self, account: str) -> list[str]:
        """End every session of the account; returns their hashes, under which servers cache them."""
        digests = [digest.decode() for digest in await self.client.smembers(keys.account_sessions_key(account))]
        pipe = self.client.pipeline(transaction=True)
        for digest in digests:
            pipe.delete(keys.session_key(digest))
        pipe.delete(keys.account_sessions_key(account))
        await pipe.execute()
        return digests


class SigninLinks:
    def __init__(self, client: aioredis.Redis, lifetime_s: float):
        self.client = client
        self.lifetime_s = int(lifetime_s)

    async def issue(self, account: str) -> str:
        token = new_token()
        await self.client.set(keys.signin_link_key(token_hash(token)), account, ex=self.lifetime_s)
        return token

    async def redeem(self, token: str) -> str | None:
        """The account the link signs in, once; None for a link used, expired or never issued."""
        name = await self.client.getdel(keys.signin_link_key(token_hash(token)))
        return None if name is None else name.decode()
