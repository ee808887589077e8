"""Per-policy-version feedback counters and their rates with Wilson 95% intervals.

Operators compare versions by these rates (a canary against the active version), often on few answers; the Wilson
score interval stays inside [0, 1] and is honest about small samples, where the normal approximation is not.
"""

from __future__ import annotations

import json
import math
import time

import redis.asyncio as aioredis
from pydantic import BaseModel

from core import keys
from feedback.commit import Commands

COUNTERS = ("served", "up", "down", "regenerations", "wins", "losses")
Z_95 = 1.959963984540054


def count(pipe: aioredis.client.Pipeline | Commands, version: str, counter: str, delta: int) -> None:
    """Queue a move of one version's counter (and remember that the version has counters)."""
    pipe.hincrby(keys.version_stats_key(version), counter, delta)
    pipe.sadd(keys.VERSIONS_SEEN, version)


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


class Rate(BaseModel):
    successes: int
    trials: int
    rate: float | None
    low: float
    high: float


def rate(successes: int, trials: int) -> Rate:
    low, high = wilson_interval(successes, trials)
    return Rate(successes=successes, trials=trials, rate=successes / trials if trials else None, low=low, high=high)


class VersionStats(BaseModel):
    version: str
    counts: dict[str, int]
    thumbs_up: Rate
    """share of served answers rated up"""
    thumbs_down: Rate
    """share of served answers rated down"""
    regenerated: Rate
    """share of served answers the user regenerated"""
    comparisons_won: Rate
    """share of the comparisons this version's answers took part in that they won"""


def version_stats(version: str, counts: dict[str, int]) -> VersionStats:
    served = counts["served"]
    return VersionStats(
        version=version,
        counts=counts,
        thumbs_up=rate(counts["up"], served),
        thumbs_down=rate(counts["down"], served),
        regenerated=rate(counts["regenerations"], served),
        comparisons_won=rate(counts["wins"], counts["wins"] + counts["losses"]),
    )


async def read_counters(client: aioredis.Redis) -> dict[str, dict[str, int]]:
    versions = sorted(v.decode() for v in await client.smembers(keys.VERSIONS_SEEN))
    pipe = client.pipeline(transaction=False)
    for version in versions:
        pipe.hgetall(keys.version_stats_key(version))
    raw = await pipe.execute()
    return {
        version: {name: int(values.get(name.encode(), 0)) for name in COUNTERS}
        for version, values in zip(versions, raw, strict=True)
    }


HISTORY_LENGTH = 10_080
"""Snapshots kept: a week at one a minute."""


async def snapshot_counters(client: aioredis.Redis, period_s: float) -> bool:
    """Append every version's counters to the history, at most once per period however many servers call it."""
    slot = int(time.time() // period_s)
    if not await client.set(keys.stats_snapshot_lock(slot), 1, nx=True, ex=int(period_s * 2) + 1):
        return False
    counters = await read_counters(client)
    entry = {"at": time.time(), "counters": counters}
    await client.xadd(keys.STATS_HISTORY, {"snapshot": json.dumps(entry)}, maxlen=HISTORY_LENGTH, approximate=True)
    return True


async def read_history(client: aioredis.Redis, since: float) -> list[dict]:
    """Snapshots taken after ``since`` (unix seconds), oldest first."""
    entries = await client.xrange(keys.STATS_HISTORY, min=str(int(since * 1000)))
    return [json.loads(fields[b"snapshot"]) for _, fields in entries]
