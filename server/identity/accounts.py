"""Accounts of the people who use the chat page: a name, a role, whether an admin has let them in, and a password
hash (none for an account that has only ever signed in with one-time links)."""

from __future__ import annotations

import re
import time
from typing import Literal

import redis.asyncio as aioredis
from pydantic import BaseModel

from core import keys
from core.errors import Conflict, InvalidInput, NotFound

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,31}$")
NAME_RULE = "2 to 32 characters: lowercase letters, digits, '_', '.' and '-', starting with a letter or digit"

Role = Literal["user", "admin"]
Status = Literal["active", "pending"]


class Account(BaseModel):
    name: str
    role: Role = "user"
    status: Status = "active"
    password_hash: str | None = None
    created: float
    train: bool = True
    """Whether this person's feedback may become training data (``feedback/eligibility.py``)."""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise InvalidInput(f"An account name is {NAME_RULE}.", param="name", code="invalid_name")
    return name


def not_found(name: str) -> NotFound:
    return NotFound(f"No account named '{name}'.", param="name", code="account_not_found")


class Accounts:
    def __init__(self, client: aioredis.Redis):
        self.client = client

    async def get(self, name: str) -> Account | None:
        raw = await self.client.hget(keys.ACCOUNTS, name)
        return None if raw is None else Account.model_validate_json(raw)

    async def require(self, name: str) -> Account:
        if (account := await self.get(name)) is None:
            raise not_found(name)
        return account

    async def create(self, name: str, role: Role, status: Status, password_hash: str | None = None) -> Account:
        account = Account(
            name=check_name(name), role=role, status=status, password_hash=password_hash, created=time.time()
        )
        if not await self.client.hsetnx(keys.ACCOUNTS, name, account.model_dump_json()):
            raise Conflict(f"An account named '{name}' exists already.", param="name", code="account_exists")
        return account

    async def save(self, account: Account) -> None:
        await self.client.hset(keys.ACCOUNTS, account.name, account.model_dump_json())

    async def list(self) -> list[Account]:
        stored = await self.client.hvals(keys.ACCOUNTS)
        return sorted((Account.model_validate_json(raw) for raw in stored), key=lambda a: a.created)

    async def delete(self, name: str) -> None:
        if not await self.client.hdel(keys.ACCOUNTS, name):
            raise not_found(name)

    async def any(self) -> bool:
        return bool(await self.client.hlen(keys.ACCOUNTS))
