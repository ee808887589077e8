"""What a training round learns from: which preference pairs, and the prompts users really asked; and which of
them no round ever trains on, so that the reward model and the gate can be judged on prompts new to them."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from core import keys
from feedback.pairs import Pair, read_newest
from trainer.chat_text import Prompt
from trainer.sampling import Served


def prompt_key(prompt: Prompt) -> str:
    """The prompt's text: its messages' roles and contents, and their calls and the tools where there are any (a
    prompt without them keeps the key it had before tools were trained on, and so its side of the split)."""
    messages = [[m["role"], m["content"], *([m["tool_calls"]] if m.get("tool_calls") else [])] for m in prompt.messages]
    return json.dumps([*messages, *([prompt.tools] if prompt.tools else [])], ensure_ascii=False)


def is_held_out(prompt: Prompt, share: float) -> bool:
    """Whether a prompt is kept out of all training: by a hash of its text, so the same prompt lands on the same
    side in every round and for every user (split by conversation, one prompt asked by two users would be on both
    sides, and a warm-started reward model would have trained on last round's held-out pairs)."""
    digest = hashlib.sha256(prompt_key(prompt).encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2**64


def split_held_out(pairs: Sequence[Pair], share: float) -> tuple[list[Pair], list[Pair]]:
    """Pairs to train on, and pairs held out, by their prompt (``is_held_out``), each in its given order."""
    held = [is_held_out(Prompt.of_pair(pair), share) for pair in pairs]
    return [p for p, h in zip(pairs, held, strict=True) if not h], [p for p, h in zip(pairs, held, strict=True) if h]


HELD_OUT_LOOKBACK = 4
"""How far back the gate's pairs are looked for: this many times the pairs that should hold enough of them."""
PAGE = 512


def newest_held_out(client: redis.Redis, share: float, wanted: int) -> list[Pair]:
    """The newest pairs with a held-out prompt, newest first: at least ``wanted`` when the stream's recent part holds
    them (twice as many, to leave the principal cap a choice), looking back at most ``HELD_OUT_LOOKBACK`` times the
    ``wanted / share`` pairs that hold that many on average. The cost stays flat however long the stream grows, and
    the gate judges on recent pairs."""
    if share <= 0 or wanted <= 0:
        return []
    budget = math.ceil(wanted / share) * HELD_OUT_LOOKBACK
    found: list[Pair] = []
    before = "+"
    while budget > 0 and len(found) < 2 * wanted:
        page = read_newest(client, min(PAGE, budget), before)
        if not page:
            break
        budget -= len(page)
        found += [pair for _, pair in page if is_held_out(Prompt.of_pair(pair), share)]
        before = f"({page[-1][0]}"
    return found


@dataclass
class RecentPrompts:
    prompts: list[Prompt] = field(default_factory=list)
    """Conversations the model answers next (ending with a user turn or a tool's result), newest first, each
    once."""
    served: list[Served] = field(default_factory=list)
    """How the answers to them were sampled."""


def recent_prompts(client: redis.Redis, limit: int) -> RecentPrompts:
    """The conversations of the most recent completions, and how they were sampled; only of answers that may be
    training data (``feedback/eligibility.py``), so that a caller who may not teach cannot choose what PPO practises
    on, nor how it samples, either."""
    entries = client.xrevrange(keys.COMPLETIONS_STREAM, count=limit * 4)
    ids = [fields.get(b"id", fields.get("id")) for _, fields in entries]
    raws = client.mget([keys.completion_key(i.decode() if isinstance(i, bytes) else i) for i in ids]) if ids else []
    recent = RecentPrompts()
    seen = set()
    for raw in raws:
        if raw is None:
            continue  # expired
        record = json.loads(raw)
        conversation = record["conversation"]
        if record.get("ineligible") or not conversation or conversation[-1]["role"] not in ("user", "tool"):
            continue
        params = record.get("params", {})
        recent.served.append(Served(params.get("temperature"), int(params.get("max_tokens", 0)) or 1))
        prompt = Prompt(conversation, record.get("tools"))
        if (key := prompt_key(prompt)) not in seen:
            seen.add(key)
            recent.prompts.append(prompt)
        if len(recent.prompts) == limit:
            break
    return recent


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
