"""The counts a canary is judged by: per canary period, the routed answers each version served, those rated down,
and how many distinct users they went to.

The all-time counters (``feedback/stats.py``) describe a version to operators; they are no basis for a decision
that anyone could steer. Here an answer counts only if the routing chose its version while that canary ran (a
caller who pins ``chatloop@vN`` chooses the version himself), and only if it may be training data
(``feedback/eligibility.py``). A completion is one vote whatever its ``n``: served once, down once if its owner
rated any of its choices down. The users are counted in a HyperLogLog (its error, about 1%, is immaterial at
the handful of users the autopilot asks for), so that no id is stored in the clear.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from core import keys
from feedback.commit import Commands


@dataclass(frozen=True)
class PeriodCounts:
    served: int = 0
    down: int = 0
    users: int = 0


def count_served(pipe: Pipeline, period: str, version: str, user_id: str, ttl_s: int) -> None:
    pipe.hincrby(keys.canary_counts_key(period), f"{version}:served", 1)
    pipe.expire(keys.canary_counts_key(period), ttl_s)
    pipe.pfadd(keys.canary_users_key(period, version), user_id)
    pipe.expire(keys.canary_users_key(period, version), ttl_s)


def count_down(commands: Commands, period: str, version: str, delta: int) -> None:
    commands.hincrby(keys.canary_counts_key(period), f"{version}:down", delta)


async def read_period(client: aioredis.Redis, period: str, versions: list[str]) -> dict[str, PeriodCounts]:
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.canary_counts_key(period))
    for version in versions:
        pipe.pfcount(keys.canary_users_key(period, version))
    raw, *users = await pipe.execute()
    fields = {name.decode(): int(value) for name, value in raw.items()}
    return {
        version: PeriodCounts(
            served=fields.get(f"{version}:served", 0), down=fields.get(f"{version}:down", 0), users=int(count)
        )
        for version, count in zip(versions, users, strict=True)
    }
