"""The identity stores over one Redis client, built once per app (``server/app.py``) or command."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from core.config import Settings
from server.identity.accounts import Accounts
from server.identity.api_keys import ApiKeys
from server.identity.conversations import Conversations
from server.identity.sessions import Sessions, SigninLinks

HOUR_S = 3600
DAY_S = 86400


@dataclass(frozen=True)
class Identity:
    accounts: Accounts
    sessions: Sessions
    links: SigninLinks
    api_keys: ApiKeys
    conversations: Conversations

    @classmethod
    def of(cls, client: aioredis.Redis, settings: Settings) -> Identity:
        return cls(
            accounts=Accounts(client),
            sessions=Sessions(client, settings.accounts.session_days * DAY_S),
            links=SigninLinks(client, settings.accounts.link_hours * HOUR_S),
            api_keys=ApiKeys(client),
            conversations=Conversations(client, settings.accounts),
        )
