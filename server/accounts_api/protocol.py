"""Request and response bodies of the account routes: signing in and out, a person's own keys, and the admin's
accounts and API keys."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from server.identity.accounts import NAME_PATTERN, NAME_RULE, Account
from server.identity.api_keys import ManagedKey
from server.identity.passwords import MAX_LENGTH, MIN_LENGTH

Name = Field(min_length=1, max_length=64)
NewName = Field(pattern=NAME_PATTERN.pattern, description=f"An account name: {NAME_RULE}.")
Password = Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH)


class Strict(BaseModel):
    """A field these routes do not know is a mistake worth telling the caller about."""

    model_config = ConfigDict(extra="forbid")


class SigninRequest(Strict):
    name: str = Name
    password: str = Field(min_length=1, max_length=MAX_LENGTH)


class LinkRequest(Strict):
    token: str = Field(min_length=1, max_length=128)


class SignupRequest(Strict):
    name: str = NewName
    password: str = Password


class PasswordRequest(Strict):
    current_password: str | None = Field(None, max_length=MAX_LENGTH)
    new_password: str = Password


class AccountView(BaseModel):
    name: str
    role: Literal["user", "admin"]
    status: Literal["active", "pending"]
    has_password: bool
    train: bool
    """Whether the person's feedback may become training data."""
    created: float

    @classmethod
    def of(cls, account: Account) -> AccountView:
        return cls(
            name=account.name,
            role=account.role,
            status=account.status,
            has_password=account.password_hash is not None,
            train=account.train,
            created=account.created,
        )


class SessionView(BaseModel):
    """What the chat page needs before it shows anything: who is signed in, and whether strangers may join."""

    account: AccountView | None
    joining: Literal["closed", "approval", "open"]


class AccountList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AccountView]


class NewAccountRequest(Strict):
    name: str = NewName
    role: Literal["user", "admin"] = "user"


class SigninLinkView(BaseModel):
    account: AccountView
    link: str
    """Opens the chat page signed in as the account, once, within ``ACCOUNTS__LINK_HOURS``."""
    expires_in: int


class TrainRequest(Strict):
    train: bool


class PersonalKeyRequest(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class ApiKeyRequest(PersonalKeyRequest):
    role: Literal["user", "admin"] = "user"
    chat_per_minute: int | None = Field(None, ge=1, le=1_000_000)
    max_concurrent: int | None = Field(None, ge=1, le=10_000)
    pairs_per_hour: int | None = Field(None, ge=0, le=1_000_000)
    train: bool = False
    """Whether feedback through the key may become training data; its ``user``s are then trusted to be people."""
    expires_at: float | None = Field(None, gt=0, le=253_402_300_799, description="Unix seconds; none: never.")


class ApiKeyView(BaseModel):
    name: str
    role: Literal["user", "admin"]
    owner: str | None
    chat_per_minute: int | None
    max_concurrent: int | None
    pairs_per_hour: int | None
    train: bool
    expires_at: float | None
    created: float

    @classmethod
    def of(cls, key: ManagedKey) -> ApiKeyView:
        return cls.model_validate(key.model_dump())


class NewApiKey(ApiKeyView):
    key: str
    """The secret, shown this once: only its hash is kept."""


class ApiKeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ApiKeyView]
