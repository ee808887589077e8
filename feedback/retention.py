"""Retention: the streams lose their entries past the retention settings on a schedule, not only when someone
writes to them (a stream nobody writes to any more would otherwise keep its texts for good).

Completion ids and preference pairs (which copy answers' text) are kept as long as the records
(``RECORD_RETENTION_DAYS``), events as long as ``EVENT_RETENTION_DAYS``. Writers trim approximately as they append
(``XADD ... MINID ~``, cheap); this trims exactly, once per period however many servers call it.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from core import keys
from core.config import Settings


def oldest_kept_ms(retention_s: float) -> int:
    """The oldest stream id (in ms) a retention of ``retention_s`` keeps: writers' and the trim's ``MINID``."""
    return int((time.time() - retention_s) * 1000)


async def trim_streams(client: aioredis.Redis, settings: Settings, period_s: float) -> bool:
    """Trim every stream to its retention; False when another server did this period's."""
    slot = int(time.time() // period_s)
    if not await client.set(keys.retention_lock(slot), 1, nx=True, ex=int(period_s * 2) + 1):
        return False
    records_s, events_s = settings.record_retention_days * 86400, settings.event_retention_days * 86400
    pipe = client.pipeline(transaction=False)
    pipe.xtrim(keys.COMPLETIONS_STREAM, minid=oldest_kept_ms(records_s))
    pipe.xtrim(keys.PAIRS_STREAM, minid=oldest_kept_ms(records_s))
    pipe.xtrim(keys.EVENTS_STREAM, minid=oldest_kept_ms(events_s))
    await pipe.execute()
    return True
