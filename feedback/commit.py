"""Optimistic transactions in one round trip: writes that Redis applies only if what they were decided from is
unchanged.

A gesture reads its conversation's state and its pair quotas, decides in Python (``feedback/rules.py``), then
writes. ``WATCH``/``MULTI``/``EXEC`` does that in three round trips after the reads; this Lua script checks the
conversation's revision and the quotas and runs the queued writes in one, atomically (Redis runs a script alone).
Each round trip costs our process more than Redis (``docs/benchmarks.md``, feedback: 1,184 to 1,988 gestures a
second with this script alone). Every writer of a conversation's state bumps its ``rev`` field, so a concurrent
gesture is seen as a changed revision and retried.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis.asyncio as aioredis

REVISION = "rev"
"""The field of a conversation's hash that every write to it increments."""

_COMMIT_IF_UNCHANGED = """
if (redis.call('HGET', KEYS[1], ARGV[1]) or '') ~= ARGV[2] then return 0 end
for i = 2, #KEYS do
  if (redis.call('GET', KEYS[i]) or '') ~= ARGV[i + 2] then return 0 end
end
for _, command in ipairs(cjson.decode(ARGV[3])) do redis.call(unpack(command)) end
return 1
"""


MAX_ITEMS = 1000
"""Fields or members per queued command. The script unpacks a command onto Lua's stack, which takes about 8,000
values: a longer one would fail every commit of its conversation for good."""


class Commands:
    """Redis writes queued as plain lists, for the script to run; the methods used with pipelines elsewhere
    (``feedback.stats.count`` takes either)."""

    def __init__(self) -> None:
        self.queued: list[list[str]] = []

    def _add(self, *command: object) -> None:
        self.queued.append([str(part) for part in command])

    def _add_items(self, command: str, key: str, items: Sequence[Sequence[object]]) -> None:
        """``command key item...`` as several commands of at most ``MAX_ITEMS`` items each, the same writes."""
        for start in range(0, len(items), MAX_ITEMS):
            self._add(command, key, *(part for item in items[start : start + MAX_ITEMS] for part in item))

    def hset(self, key: str, mapping: dict[str, str]) -> None:
        self._add_items("HSET", key, list(mapping.items()))

    def hdel(self, key: str, *fields: str) -> None:
        self._add_items("HDEL", key, [(field,) for field in fields])

    def hincrby(self, key: str, field: str, delta: int) -> None:
        self._add("HINCRBY", key, field, delta)

    def sadd(self, key: str, *members: str) -> None:
        self._add_items("SADD", key, [(member,) for member in members])

    def incrby(self, key: str, delta: int) -> None:
        self._add("INCRBY", key, delta)

    def expire(self, key: str, seconds: int) -> None:
        self._add("EXPIRE", key, seconds)

    def xadd(self, key: str, fields: dict[str, str], minid: int) -> None:
        """Append, trimming entries older than ``minid`` (approximately, as Redis trims whole nodes)."""
        self._add("XADD", key, "MINID", "~", minid, "*", *(part for item in fields.items() for part in item))


class ConditionalCommit:
    def __init__(self, client: aioredis.Redis):
        self._script = client.register_script(_COMMIT_IF_UNCHANGED)

    async def __call__(self, conversation: str, revision: str, quotas: dict[str, str], commands: Commands) -> bool:
        """Run ``commands`` if ``conversation``'s revision and each counter of ``quotas`` (its key -> the value
        read) still hold the values read (``""`` for missing); False, with nothing written, if any changed."""
        applied = await self._script(
            keys=[conversation, *quotas], args=[REVISION, revision, json.dumps(commands.queued), *quotas.values()]
        )
        return bool(applied)
