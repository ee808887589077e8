"""What a training round learns from: which preference pairs, and the prompts users really asked."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Sequence

import redis

from core import keys
from feedback.pairs import Pair


def recent_prompts(client: redis.Redis, limit: int) -> list[list[dict]]:
    """The conversations of the most recent completions (newest first), each once, ending with a user turn; only
    of answers that may be training data (``feedback/eligibility.py``), so that a caller who may not teach cannot
    choose what PPO practises on either."""
    entries = client.xrevrange(keys.COMPLETIONS_STREAM, count=limit * 4)
    ids = [fields.get(b"id", fields.get("id")) for _, fields in entries]
    raws = client.mget([keys.completion_key(i.decode() if isinstance(i, bytes) else i) for i in ids]) if ids else []
    prompts: dict[str, list[dict]] = {}
    for raw in raws:
        if raw is None:
            continue  # expired
        record = json.loads(raw)
        if record.get("ineligible"):
            continue
        conversation = record["conversation"]
        if conversation and conversation[-1]["role"] == "user":
            prompts.setdefault(json.dumps(conversation, sort_keys=True), conversation)
        if len(prompts) == limit:
            break
    return list(prompts.values())


def round_pairs(new: Sequence[Pair], every: Sequence[Pair], limit: int, seed: int, max_share: float) -> list[Pair]:
    """The new pairs, then a random sample of the earlier ones, ``limit`` in all, no principal over ``max_share``.

    A round's cost then stays flat however long the stream grows (with every pair, the fourth round of a closed-loop
    run took six times the first), and the newest pairs, those that judge the answers of the policy now serving,
    are always in (but for the cap). The sample varies from round to round, so that over many rounds every pair is
    seen.
    """
    taken = {pair.pair_id for pair in new}
    earlier = [pair for pair in every if pair.pair_id not in taken]
    random.Random(f"{seed}:{len(every)}").shuffle(earlier)
    return capped([*new, *earlier], limit, max_share)


def _principal(pair: Pair) -> str:
    return pair.principal_id or pair.user_id


def capped(ordered: Sequence[Pair], limit: int, max_share: float) -> list[Pair]:
    """The longest prefix-respecting selection of at most ``limit`` pairs from ``ordered`` (first come first) in
    which no principal (an API key or an account) has more than ``max_share`` of the pairs.

    So that no one key or account, however busy, decides what a round teaches. The share cannot hold among fewer
    than ``1 / max_share`` principals (one principal can only have all of its own round): below that many in
    ``ordered``, nothing is capped, which is how a deployment with a handful of users, or one app, trains at all.
    """
    if len({_principal(pair) for pair in ordered}) < math.ceil(1 / max_share - 1e-9):
        return list(ordered[:limit])
    for size in range(min(limit, len(ordered)), 0, -1):
        most = max(1, math.floor(max_share * size + 1e-9))
        counts: Counter[str] = Counter()
        chosen = []
        for pair in ordered:
            if counts[_principal(pair)] < most:
                counts[_principal(pair)] += 1
                chosen.append(pair)
                if len(chosen) == size:
                    return chosen
    return []
