"""What a training round reads from Redis as the pairs stream grows: time, Redis CPU and the trainer's memory.

For each stream length a private redis-server is filled with synthetic pairs (one a second, as a busy deployment
stores them) and a round reads its inputs (``trainer/round.py: _read_inputs``: the new pairs, a sample of earlier
ones, the newest held-out ones) under a fresh consumer group. Beside it, in the same run, the way rounds read
before: every pair of the stream (``read_all``). No model is loaded:

    .venv/bin/python bench/round_reads.py [--lengths 1000 10000 100000 500000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import redis
from report import default_out, write_results

from core import keys
from core.config import Settings
from core.local_redis import start_local_redis
from feedback.pairs import read_all
from tests.factories import short_over_long_pair
from trainer.context import TrainerContext
from trainer.round import _read_inputs

FILL_BATCH = 5000


def fill(client: redis.Redis, length: int) -> None:
    for start in range(0, length, FILL_BATCH):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + FILL_BATCH, length)):
            pair = short_over_long_pair(i).model_dump_json()
            pipe.xadd(keys.PAIRS_STREAM, {"pair": pair}, id=f"{10**12 + i * 1000}-0")
        pipe.execute()


def redis_usec(client: redis.Redis) -> float:
    """Microseconds Redis has spent in commands so far (all commands)."""
    return sum(stats["usec"] for stats in client.info("commandstats").values())


def measure(client: redis.Redis, read: Callable[[], object]) -> dict[str, float]:
    """Wall seconds, Redis milliseconds and the peak of Python memory allocated while ``read`` runs."""
    client.xgroup_destroy(keys.PAIRS_STREAM, keys.TRAINER_GROUP)  # every pair unread, as before a first round
    client.xgroup_create(keys.PAIRS_STREAM, keys.TRAINER_GROUP, id="0", entries_read=0)
    before = redis_usec(client)
    tracemalloc.start()
    started = time.perf_counter()
    read()
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": seconds, "redis_ms": (redis_usec(client) - before) / 1000, "peak_mib": peak / 2**20}


def measure_length(folder: Path, length: int) -> dict:
    local = start_local_redis(folder / f"redis-{length}")
    try:
        client = redis.Redis.from_url(local.url)
        fill(client, length)
        settings = Settings(_env_file=None, data_dir=folder / f"data-{length}")
        side = TrainerContext.create(settings, client).redis
        bounded = measure(client, lambda: _read_inputs(settings, side))
        whole = measure(client, lambda: read_all(client))
    finally:
        local.stop()
    print(f"{length} pairs: round {bounded}, whole stream {whole}", flush=True)
    return {"pairs": length, "round": bounded, "whole_stream": whole}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 10_000, 100_000, 500_000])
    parser.add_argument("--out", type=Path, default=default_out("round-reads"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure_length(Path(folder), length) for length in args.lengths]
    table = "\n".join(
        [
            "| pairs in the stream | round: seconds | round: Redis ms | round: peak MiB | whole stream: seconds "
            "| whole stream: Redis ms | whole stream: peak MiB | round / whole stream, seconds |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *(
                f"| {row['pairs']:,} | {row['round']['seconds']:.3f} | {row['round']['redis_ms']:.1f} "
                f"| {row['round']['peak_mib']:.1f} | {row['whole_stream']['seconds']:.2f} "
                f"| {row['whole_stream']['redis_ms']:.0f} | {row['whole_stream']['peak_mib']:.0f} "
                f"| {row['round']['seconds'] / row['whole_stream']['seconds']:.3f}x |"
                for row in rows
            ),
        ]
    )
    write_results(args.out, args, {"rows": rows}, table)


if __name__ == "__main__":
    main()
