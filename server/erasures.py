"""Whose data an erasure takes: a person's account (asked by an admin, or by the person on the chat page), or a
``user`` an app named, under one of its keys or under every key. ``feedback/erasure.py`` does the removing; this
module turns the request into the user ids and the identity's own keys it covers."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from core import keys
from core.keyed_ids import KeyedIds
from feedback.erasure import Erasure, ErasureReport
from server.auth import Authenticator, Caller, account_key_id, key_id_of_hash
from server.identity.api_keys import not_found
from server.identity.signin import account_subject
from server.identity.stores import Identity

log = logging.getLogger(__name__)


class Erasures:
    def __init__(
        self, client: aioredis.Redis, identity: Identity, auth: Authenticator, ids: KeyedIds, erasure: Erasure
    ):
        self.client = client
        self.identity = identity
        self.auth = auth
        self.ids = ids
        self.erasure = erasure

    async def of_account(self, name: str, by: Caller) -> ErasureReport:
        """Everything the person taught or asked, their stored conversations and their sessions (they are signed
        out everywhere). The account itself and its keys stay: removing those is ``DELETE /v1/admin/users``."""
        key_id = account_key_id(name)
        user_id = self.ids.user_id(key_id, name)
        await self.client.srem(keys.user_name_key(self.ids.user_name_id(name)), user_id)
        ended = await self.identity.sessions.end_all(name)
        self.auth.forget(*(("session", digest) for digest in ended))  # other replicas within the reconcile period
        await self.identity.conversations.delete_all(name)
        also = [
            keys.chat_rate_key(key_id),
            keys.chat_in_flight_key(key_id),
            keys.signin_attempts_key(account_subject(name), keys.EVERY_WINDOW),
            keys.key_pair_quota_key(self.ids.principal_id(key_id), keys.EVERY_WINDOW),
        ]
        return await self._erase({user_id}, also, by, "account", by_self=by.account == name)

    async def of_user(self, user: str, key_name: str | None, by: Caller) -> ErasureReport:
        """A ``user`` under the managed key named ``key_name``, or under every key that ever named it."""
        named = keys.user_name_key(self.ids.user_name_id(user))
        if key_name is None:
            user_ids = {member.decode() for member in await self.client.smembers(named)}
            return await self._erase(user_ids, [named], by, "user under every key")
        digest = await self.client.hget(keys.API_KEY_NAMES, f"/{key_name}")
        if digest is None:
            raise not_found(key_name)
        user_id = self.ids.user_id(key_id_of_hash(digest.decode()), user)
        await self.client.srem(named, user_id)
        return await self._erase({user_id}, [], by, "user under one key")

    async def _erase(
        self, user_ids: set[str], also: list[str], by: Caller, kind: str, *, by_self: bool = False
    ) -> ErasureReport:
        """``by_self``: the person erases their own data, and the record of it does not name them either."""
        who = "the person" if by_self else by.key_id
        report = await asyncio.to_thread(self.erasure.erase, user_ids, also=also, who=who, kind=kind)
        log.info("erasure done", extra={"kind": kind, "by": who, **report.model_dump(exclude={"versions"})})
        return report
