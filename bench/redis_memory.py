"""Redis memory per item of the loop's state: a preference pair, a feedback event, a completion record.

Builds representative items with the project's own models (feedback/pairs.py, feedback/records.py) and writes
--count of each the way the server and the feedback store write them, into a fresh local redis-server (the one
`chatloop serve` would start, AOF on). Bytes per item come from Redis's `used_memory` before and after, which
counts the key, its TTL and the stream's node overhead, beside the item's JSON size. No engine, no GPU: seconds.
docs/scaling.md sizes Redis with these figures.

    .venv/bin/python bench/redis_memory.py [--answer-chars 640] [--prompt-chars 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
from report import default_out, figure_table, write_results

from core import keys
from core.local_redis import start_local_redis
from feedback.pairs import Pair, PairAnswer
from feedback.records import CompletionRecord, RecordedChoice, RecordedMessage

RETENTION_S = 30 * 86400
WORDS = "the quick answer lists three steps and explains why each one matters for the reader today ".split()


def text(chars: int) -> str:
    words, length = [], 0
    while length < chars:
        words.append(WORDS[len(words) % len(WORDS)])
        length += len(words[-1]) + 1
    return " ".join(words)[:chars]


def completion(args: argparse.Namespace) -> CompletionRecord:
    """A one-choice chat answer, as server/answers/recording.py records it."""
    return CompletionRecord(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=time.time(),
        finished=time.time(),
        status="complete",
        model="chatloop",
        version="v12",
        key_id=uuid.uuid4().hex[:16],
        user="user-12345",
        metadata={},
        stream=True,
        conversation=[RecordedMessage(role="user", content=text(args.prompt_chars))],
        choices=[RecordedChoice(index=0, text=text(args.answer_chars), finish_reason="stop", completion_tokens=140)],
        params={"temperature": 0.8, "top_p": 1.0, "max_tokens": 512, "n": 1},
        prompt_tokens=50,
        completion_tokens=140,
    )


def pair(args: argparse.Namespace) -> Pair:
    """A comparison of two answers to one prompt, as feedback/gestures.py emits it."""

    def answer(version: str) -> PairAnswer:
        return PairAnswer(
            completion_id=f"chatcmpl-{uuid.uuid4().hex}", choice_index=0, text=text(args.answer_chars), version=version
        )

    return Pair(
        pair_id=f"pair-{uuid.uuid4().hex}",
        conversation_id=uuid.uuid4().hex[:24],
        user_id=uuid.uuid4().hex[:16],
        prompt=[RecordedMessage(role="user", content=text(args.prompt_chars))],
        chosen=answer("v12"),
        rejected=answer("v11"),
        rule="comparison",
        weight=1.0,
        created=time.time(),
        answered=time.time(),
    )


def event() -> dict:
    """A comparison gesture as the event stream holds it (feedback/gestures.py: _append_event)."""
    return {
        "id": f"evt-{uuid.uuid4().hex}",
        "created": time.time(),
        "user_id": uuid.uuid4().hex[:16],
        "conversation_id": uuid.uuid4().hex[:24],
        "type": "comparison",
        "chosen": f"chatcmpl-{uuid.uuid4().hex}:0",
        "rejected": f"chatcmpl-{uuid.uuid4().hex}:0",
        "pairs": [f"pair-{uuid.uuid4().hex}"],
    }


def measure(client: redis.Redis, count: int, write: Callable[[redis.client.Pipeline], int]) -> tuple[float, float]:
    """(bytes of Redis memory per item, mean JSON bytes per item) for ``count`` items written by ``write``."""
    before = client.info("memory")["used_memory"]
    json_bytes = 0
    for start in range(0, count, 1000):
        pipe = client.pipeline(transaction=False)
        json_bytes += sum(write(pipe) for _ in range(min(1000, count - start)))
        pipe.execute()
    return (client.info("memory")["used_memory"] - before) / count, json_bytes / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="items of each kind")
    parser.add_argument("--answer-chars", type=int, default=640, help="the model's mean answer, about 106 words")
    parser.add_argument("--prompt-chars", type=int, default=200, help="the user's message")
    parser.add_argument("--out", type=Path, help="results folder (default: bench/results/redis-memory-<time>)")
    args = parser.parse_args()
    out = args.out or default_out("redis-memory")
    out.mkdir(parents=True, exist_ok=True)

    def write_pair(pipe: redis.client.Pipeline) -> int:
        payload = pair(args).model_dump_json()
        pipe.xadd(keys.PAIRS_STREAM, {"pair": payload})
        return len(payload)

    def write_event(pipe: redis.client.Pipeline) -> int:
        payload = json.dumps(event())
        pipe.xadd(keys.EVENTS_STREAM, {"event": payload})
        return len(payload)

    def write_completion(pipe: redis.client.Pipeline) -> int:
        record = completion(args)
        payload = record.model_dump_json()
        pipe.set(keys.completion_key(record.id), payload, ex=RETENTION_S)
        pipe.xadd(keys.COMPLETIONS_STREAM, {"id": record.id})
        return len(payload)

    with tempfile.TemporaryDirectory() as folder:
        local = start_local_redis(Path(folder))
        client = redis.Redis.from_url(local.url)
        try:
            figures = {
                "pair": measure(client, args.count, write_pair),
                "event": measure(client, args.count, write_event),
                "completion": measure(client, args.count, write_completion),
            }
            version = client.info("server")["redis_version"]
        finally:
            client.close()
            local.stop()

    results = {kind: {"redis_bytes": memory, "json_bytes": size} for kind, (memory, size) in figures.items()}
    results["redis_version"] = version
    table = figure_table(
        [
            (f"{kind}: Redis bytes per item (JSON bytes)", f"{memory:,.0f} ({size:,.0f})")
            for kind, (memory, size) in figures.items()
        ]
        + [("Redis", version)]
    )
    write_results(out, args, results, table)


if __name__ == "__main__":
    main()
