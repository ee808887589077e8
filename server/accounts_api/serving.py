"""What the account routes do: sign people in (password or one-time link) and out, let them join as the setting
allows, manage their own API keys; and the admin's side, accounts and managed keys.

A caller's own account is always the one it signed in as (``Caller.account``); no route takes an account name from
a person, only from an admin.
"""

from __future__ import annotations

import logging
import time

from core.config import Settings
from core.errors import Conflict, InvalidInput
from server.auth import Authenticator, Caller
from server.errors import ApiError
from server.identity.accounts import Account, Role, Status, check_name
from server.identity.api_keys import ManagedKey
from server.identity.passwords import hash_password, verify_password
from server.identity.signin import SigninAttempts
from server.identity.stores import Identity
from server.identity.tokens import token_hash

log = logging.getLogger(__name__)

WRONG_PASSWORD = ApiError(401, "Wrong account name or password.", code="invalid_credentials")
LINK_USED = ApiError(401, "This sign-in link has been used or has expired; ask for a new one.", code="invalid_link")


def _pending(account: Account) -> ApiError:
    return ApiError(403, f"The account '{account.name}' awaits an admin's approval.", code="account_pending")


class AccountService:
    def __init__(self, identity: Identity, attempts: SigninAttempts, auth: Authenticator, settings: Settings):
        self.identity = identity
        self.attempts = attempts
        self.auth = auth
        self.settings = settings

    # ---- signing in and out -------------------------------------------------------------------------------

    async def signed_in(self, token: str | None) -> Account | None:
        """The account a session cookie belongs to, if it is still good; never an error."""
        name = await self.identity.sessions.account(token) if token else None
        account = await self.identity.accounts.get(name) if name else None
        return account if account is not None and account.status == "active" else None

    async def signin(self, name: str, password: str, address: str) -> tuple[Account, str]:
        await self.attempts.count(name.lower(), address)
        account = await self.identity.accounts.get(name.lower())
        if not await verify_password(account.password_hash if account else None, password) or account is None:
            log.info("sign-in refused", extra={"account": name.lower()[:64], "address": address})
            raise WRONG_PASSWORD
        return account, await self._start(account)

    async def redeem_link(self, token: str, address: str) -> tuple[Account, str]:
        await self.attempts.count(None, address)
        name = await self.identity.links.redeem(token)
        account = await self.identity.accounts.get(name) if name else None
        if account is None:
            raise LINK_USED
        if account.status == "pending":
            account.status = "active"
            await self.identity.accounts.save(account)
        return account, await self._start(account)

    async def signup(self, name: str, password: str, address: str) -> tuple[Account, str | None]:
        """Open joining signs the person in at once; approval makes a pending account and no session."""
        joining = self.settings.accounts.joining
        if joining == "closed":
            raise ApiError(403, "This server does not take new accounts; ask an admin for one.", code="joining_closed")
        await self.attempts.count(None, address)
        status: Status = "active" if joining == "open" else "pending"
        account = await self.identity.accounts.create(check_name(name), "user", status, await hash_password(password))
        log.info("account made", extra={"account": account.name, "status": status})
        return account, (await self._start(account) if status == "active" else None)

    async def signout(self, token: str) -> None:
        await self.identity.sessions.end(token)
        self.auth.forget(("session", token_hash(token)))

    async def _start(self, account: Account) -> str:
        if account.status != "active":
            raise _pending(account)
        log.info("signed in", extra={"account": account.name})
        return await self.identity.sessions.start(account.name)

    # ---- a person's own account ---------------------------------------------------------------------------

    async def change_password(self, caller: Caller, current: str | None, new: str) -> Account:
        account = await self.own_account(caller)
        if account.password_hash is not None and not await verify_password(account.password_hash, current or ""):
            raise ApiError(400, "The current password is wrong.", param="current_password", code="invalid_password")
        account.password_hash = await hash_password(new)
        await self.identity.accounts.save(account)
        self.auth.forget(("account", account.name))
        return account

    async def personal_keys(self, caller: Caller) -> list[ManagedKey]:
        return await self.identity.api_keys.list((await self.own_account(caller, session=True)).name)

    async def make_personal_key(self, caller: Caller, name: str) -> tuple[ManagedKey, str]:
        owner = (await self.own_account(caller, session=True)).name
        if len(await self.identity.api_keys.list(owner)) >= self.settings.accounts.max_personal_keys:
            limit = self.settings.accounts.max_personal_keys
            raise Conflict(f"You have {limit} API keys already; revoke one first.", code="too_many_keys")
        key = ManagedKey(name=name, owner=owner, created=time.time())
        return key, await self.identity.api_keys.create(key)

    async def revoke_personal_key(self, caller: Caller, name: str) -> None:
        owner = (await self.own_account(caller, session=True)).name
        await self._revoke_key(name, owner)

    async def own_account(self, caller: Caller, *, session: bool = False) -> Account:
        """The caller's account. Keys are made and revoked from a session only, so that a leaked key cannot make
        others."""
        if caller.account is None or (session and not caller.by_session):
            raise ApiError(403, "Sign in on the chat page to manage your account.", code="account_required")
        return await self.identity.accounts.require(caller.account)

    async def _revoke_key(self, name: str, owner: str | None) -> None:
        digest = await self.identity.api_keys.revoke(name, owner)
        self.auth.forget(("key", digest))

    # ---- the admin's side ---------------------------------------------------------------------------------

    async def accounts(self) -> list[Account]:
        return await self.identity.accounts.list()

    async def add_account(self, admin: Caller, name: str, role: Role) -> tuple[Account, str]:
        account = await self.identity.accounts.create(check_name(name), role, "active")
        log.info("account added", extra={"account": name, "role": role, "by": admin.key_id})
        return account, await self.identity.links.issue(account.name)

    async def new_link(self, admin: Caller, name: str) -> tuple[Account, str]:
        account = await self.identity.accounts.require(name)
        log.info("sign-in link issued", extra={"account": name, "by": admin.key_id})
        return account, await self.identity.links.issue(account.name)

    async def approve(self, admin: Caller, name: str) -> Account:
        account = await self.identity.accounts.require(name)
        if account.status != "pending":
            raise Conflict(f"The account '{name}' is active already.", param="name", code="account_active")
        account.status = "active"
        await self.identity.accounts.save(account)
        log.info("account approved", extra={"account": name, "by": admin.key_id})
        return account

    async def set_train(self, admin: Caller, name: str, train: bool) -> Account:
        account = await self.identity.accounts.require(name)
        account.train = train
        await self.identity.accounts.save(account)
        self.auth.forget(("account", name))
        log.info("account training changed", extra={"account": name, "train": train, "by": admin.key_id})
        return account

    async def remove_account(self, admin: Caller, name: str) -> None:
        """The account, its sessions, its keys and its conversations: it can do nothing more anywhere once the
        other replicas' caches have lapsed."""
        if admin.account == name:
            raise InvalidInput("You cannot remove your own account.", param="name", code="own_account")
        await self.identity.accounts.delete(name)
        await self.identity.sessions.end_all(name)
        for key in await self.identity.api_keys.list(name):
            await self._revoke_key(key.name, name)
        await self.identity.conversations.delete_all(name)
        self.auth.forget(("account", name))
        log.info("account removed", extra={"account": name, "by": admin.key_id})

    async def api_keys(self) -> list[ManagedKey]:
        return await self.identity.api_keys.list(everyone=True)

    async def make_api_key(self, admin: Caller, key: ManagedKey) -> str:
        secret = await self.identity.api_keys.create(key)
        log.info("api key made", extra={"key": key.name, "role": key.role, "by": admin.key_id})
        return secret

    async def revoke_api_key(self, admin: Caller, name: str, owner: str | None) -> None:
        await self._revoke_key(name, owner)
        log.info("api key revoked", extra={"key": name, "owner": owner, "by": admin.key_id})
