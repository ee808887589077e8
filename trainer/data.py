"""What a training round reads from Redis besides pairs: the prompts users really asked."""

from __future__ import annotations

import json

import redis

from core import keys


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
