"""A person's conversations as the chat page shows them, kept on the server so that they follow the person from one
browser to another (the page's own storage is no more than a cache).

The page owns the shape of a conversation (messages, the ids of its answers, ratings given); the server checks its
size and count, keeps it per account, and never reads it for anything else: training data comes from the recorded
completions, never from what a page says it was shown.
"""

from __future__ import annotations

import json
import time

import redis.asyncio as aioredis

from core import keys
from core.config import AccountSettings
from core.errors import Conflict, InvalidInput, NotFound

KB = 1024


def not_found(conversation_id: str) -> NotFound:
    return NotFound(f"No conversation with id '{conversation_id}'.", param="id", code="conversation_not_found")


class Conversations:
    def __init__(self, client: aioredis.Redis, settings: AccountSettings):
        self.client = client
        self.settings = settings

    async def list(self, account: str) -> list[dict]:
        """Id, title and time of each, newest first: what the sidebar needs, without the messages."""
        stored = await self.client.hvals(keys.conversations_key(account))
        summaries = [json.loads(raw) for raw in stored]
        heads = [{k: c.get(k) for k in ("id", "title", "updated")} for c in summaries]
        return sorted(heads, key=lambda c: c["updated"], reverse=True)

    async def get(self, account: str, conversation_id: str) -> dict:
        raw = await self.client.hget(keys.conversations_key(account), conversation_id)
        if raw is None:
            raise not_found(conversation_id)
        return json.loads(raw)

    async def put(self, account: str, conversation: dict) -> dict:
        conversation = {**conversation, "updated": time.time()}
        encoded = json.dumps(conversation, ensure_ascii=False)
        limit = self.settings.conversation_kb
        if len(encoded.encode()) > limit * KB:
            raise InvalidInput(
                f"A conversation may take at most {limit} KB; start a new one.", code="conversation_too_large"
            )
        key = keys.conversations_key(account)
        exists = await self.client.hexists(key, conversation["id"])
        if not exists and await self.client.hlen(key) >= self.settings.max_conversations:
            raise Conflict(
                f"You have {self.settings.max_conversations} conversations; delete some first.",
                code="too_many_conversations",
            )
        await self.client.hset(key, conversation["id"], encoded)
        return conversation

    async def delete(self, account: str, conversation_id: str) -> None:
        if not await self.client.hdel(keys.conversations_key(account), conversation_id):
            raise not_found(conversation_id)

    async def delete_all(self, account: str) -> None:
        await self.client.delete(keys.conversations_key(account))
