"""The first person in: on a data folder with no accounts, ``chatloop up`` makes the account ``admin`` and prints a
one-time link that signs its holder in, so that a newcomer chats with one click and never types a key. Until that
account has a password or a session, each start prints a fresh link (the earlier ones still work until they
expire); after that, nothing: people join as ``ACCOUNTS__JOINING`` says, or an admin adds them."""

from __future__ import annotations

from server.identity.accounts import Account
from server.identity.stores import Identity

FIRST_ADMIN = "admin"


async def first_admin_link(identity: Identity) -> str | None:
    """A link token for the first admin, or None once someone has taken the server over."""
    accounts = await identity.accounts.list()
    if not accounts:
        await identity.accounts.create(FIRST_ADMIN, "admin", "active")
    elif not _unclaimed(accounts) or await identity.sessions.any(FIRST_ADMIN):
        return None
    return await identity.links.issue(FIRST_ADMIN)


def _unclaimed(accounts: list[Account]) -> bool:
    return [a.name for a in accounts] == [FIRST_ADMIN] and accounts[0].password_hash is None
