"""What a training round learns from: which preference pairs, the answers users liked, and the prompts users
really asked."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import redis

from core import keys
from feedback.pairs import Pair
from feedback.rules import split_ref

EVENTS_PAGE = 1000
LIKED_SCAN_FACTOR = 50
"""``liked_answers`` reads at most this many events per answer it may return: a bound on a stream without ups."""


class Demonstration(NamedTuple):
    """An answer for the supervised stage to imitate, and the conversation it replies to."""

    prompt: list[dict]
    answer: str


def _events_newest_first(client: redis.Redis, most: int) -> Iterator[dict]:
    last = "+"
    read = 0
    while read < most:
        entries = client.xrevrange(keys.EVENTS_STREAM, max=last, count=min(EVENTS_PAGE, most - read))
        if not entries:
            return
        for _, fields in entries:
            yield json.loads(fields.get(b"event", fields.get("event")))
        read += len(entries)
        newest_unread = entries[-1][0]
        last = f"({newest_unread.decode() if isinstance(newest_unread, bytes) else newest_unread}"


def liked_answers(client: redis.Redis, limit: int) -> list[Demonstration]:
    """The answers users rated up, newest first, each once, whose rating still stands (a later down or a cleared
    rating takes it back) and whose record has not expired.

    A single rating makes no preference pair (feedback/rules.py), yet it says what the user wants: in the
    closed-loop runs, answers rated up outnumbered the chosen answers of pairs (a pair needs two answers the user
    tells apart), so the supervised stage imitates both.
    """
    latest: set[str] = set()
    liked: list[str] = []
    for event in _events_newest_first(client, limit * LIKED_SCAN_FACTOR):
        ref = event.get("answer")
        if event.get("type") != "rating" or ref in latest:
            continue
        latest.add(ref)
        if event["rating"] == "up":
            liked.append(ref)
            if len(liked) == limit:
                break
    refs = [split_ref(ref) for ref in liked]
    raws = client.mget([keys.completion_key(completion_id) for completion_id, _ in refs]) if refs else []
    demonstrations = []
    for (_, index), raw in zip(refs, raws, strict=True):
        if raw is not None:
            record = json.loads(raw)
            demonstrations.append(Demonstration(record["conversation"], record["choices"][index]["text"]))
    return demonstrations


def sft_demonstrations(pairs: Sequence[Pair], liked: Sequence[Demonstration]) -> list[Demonstration]:
    """The chosen answer of each pair, then the liked answers: each answer to a conversation once."""
    chosen = [Demonstration([m.model_dump() for m in pair.prompt], pair.chosen.text) for pair in pairs]
    unique: dict[tuple[str, str], Demonstration] = {}
    for demonstration in [*chosen, *liked]:
        unique.setdefault((json.dumps(demonstration.prompt, sort_keys=True), demonstration.answer), demonstration)
    return list(unique.values())


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
