"""What a training round learns from: which preference pairs, and the prompts users really asked."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

import redis

from core import keys
from feedback.pairs import Pair


def recent_prompts(client: redis.Redis, limit: int) -> list[list[dict]]:
    """The conversations of the most recent completions (newest first), each once, ending with a user turn."""
    entries = client.xrevrange(keys.COMPLETIONS_STREAM, count=limit * 4)
    ids = [fields.get(b"id", fields.get("id")) for _, fields in entries]
    raws = client.mget([keys.completion_key(i.decode() if isinstance(i, bytes) else i) for i in ids]) if ids else []
    prompts: dict[str, list[dict]] = {}
    for raw in raws:
        if raw is None:
            continue  # expired
        conversation = json.loads(raw)["conversation"]
        if conversation and conversation[-1]["role"] == "user":
            prompts.setdefault(json.dumps(conversation, sort_keys=True), conversation)
        if len(prompts) == limit:
            break
    return list(prompts.values())


def round_pairs(new: Sequence[Pair], every: Sequence[Pair], limit: int, seed: int) -> list[Pair]:
    """The new pairs, then a random sample of the earlier ones, ``limit`` in all.

    A round's cost then stays flat however long the stream grows (with every pair, the fourth round of a closed-loop
    run took six times the first), and the newest pairs, those that judge the answers of the policy now serving,
    are always in. The sample varies from round to round, so that over many rounds every pair is seen.
    """
    fresh = list(new[:limit])
    taken = {pair.pair_id for pair in fresh}
    earlier = [pair for pair in every if pair.pair_id not in taken]
    room = min(limit - len(fresh), len(earlier))
    return fresh + random.Random(f"{seed}:{len(every)}").sample(earlier, room)
