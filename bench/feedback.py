"""Feedback through HTTP: events per second and latency, beside Redis's own XADD ceiling; chat TTFT under load.

1. Starts our server (with its own local Redis) and makes --answers completions (n=2) spread over --users users.
2. Runs ``redis-benchmark`` XADD against that same Redis: the ceiling for one append, with no HTTP around it.
3. Sends --events ratings (up, down, clear, in turn, on random answers) at --concurrency through
   ``POST /v1/feedback``; prints events/s and latency p50/p99.
4. Measures chat TTFT with vLLM's benchmark client at concurrency 4, alone and then while a steady feedback load
   of --load-rate events/s runs in another process; prints the ratio of the medians.

The per-user rate limit is lifted for the run (CHATLOOP_FEEDBACK_PER_MINUTE): it measures the store, not the
limiter. Run it with nothing else loading the machine:

    .venv/bin/python bench/feedback.py
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import aiohttp
from harness import Server, chatloop_command, drive_chat, running
from report import default_out, figure_table, write_results

from core.config import LOCAL_API_KEY, Settings

HEADERS = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
RATINGS = ("up", "down", None)


def make_answers(server: Server, answers: int, users: int) -> list[tuple[str, str]]:
    """(completion id, user) of freshly generated two-choice answers."""

    async def one(session: aiohttp.ClientSession, index: int) -> tuple[str, str]:
        user = f"bench-user-{index % users}"
        body = {
            "model": "chatloop",
            "messages": [{"role": "user", "content": f"Say a word ({index})."}],
            "max_tokens": 4,
            "n": 2,
            "user": user,
        }
        async with session.post(f"{server.url}/v1/chat/completions", json=body, headers=HEADERS) as response:
            return (await response.json())["id"], user

    async def run() -> list[tuple[str, str]]:
        async with aiohttp.ClientSession() as session:
            semaphore = asyncio.Semaphore(8)

            async def bounded(index: int) -> tuple[str, str]:
                async with semaphore:
                    return await one(session, index)

            return await asyncio.gather(*(bounded(i) for i in range(answers)))

    return asyncio.run(run())


async def _send_ratings(
    url: str, answers: list[tuple[str, str]], events: int, concurrency: int, rate: float | None
) -> tuple[list[float], dict[int, int]]:
    """Latencies (s) and status counts of ``events`` ratings; at most ``rate`` per second when given."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(events))
    started = time.perf_counter()
    rng = random.Random(0)

    async def worker(session: aiohttp.ClientSession) -> None:
        for index in counter:
            if rate is not None:
                await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
            completion_id, user = rng.choice(answers)
            body = {
                "completion_id": completion_id,
                "choice_index": index % 2,
                "rating": RATINGS[index % 3],
                "user": user,
            }
            sent = time.perf_counter()
            async with session.post(f"{url}/v1/feedback", json=body, headers=HEADERS) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            latencies.append(time.perf_counter() - sent)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return latencies, statuses


def feedback_load(url: str, answers: list[tuple[str, str]], events: int, concurrency: int, rate: float) -> None:
    """The steady background load of step 4 (runs in its own process)."""
    asyncio.run(_send_ratings(url, answers, events, concurrency, rate))


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def redis_ceiling(server: Server, requests: int) -> float | None:
    """XADD/s that redis-benchmark reaches on the server's Redis (50 clients), or None without redis-benchmark."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    socket_path = server.redis_url.removeprefix("unix://")
    done = subprocess.run(
        [binary, "-s", socket_path, "-n", str(requests), "-c", "50", "-q", "XADD", "bench:ceiling", "*", "f", "v"],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"([\d.]+) requests per second", done.stdout)
    return float(found.group(1)) if found else None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=200)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--load-rate", type=float, default=200.0, help="events/s of the background load in step 4")
    parser.add_argument("--chat-prompts", type=int, default=32)
    parser.add_argument("--out", type=Path, default=default_out("feedback"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    settings = Settings()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {"CHATLOOP_FEEDBACK_PER_MINUTE": "100000000"}
    with running("chatloop", chatloop_command, settings, args.out, extra_env=env) as server:
        answers = make_answers(server, args.answers, args.users)
        ceiling = redis_ceiling(server, 100_000)
        started = time.perf_counter()
        latencies, statuses = asyncio.run(_send_ratings(server.url, answers, args.events, args.concurrency, None))
        elapsed = time.perf_counter() - started
        # Each chat run has prompts of its own (its seed): a prompt seen before would hit the prefix cache.
        drive_chat(server, settings, concurrency=4, num_prompts=8, seed=1)  # warm-up: "quiet" is no cold start
        quiet = drive_chat(server, settings, concurrency=4, num_prompts=args.chat_prompts, seed=2)
        load_events = int(args.load_rate * 600)  # more than the chat run needs; stopped when it ends
        load = multiprocessing.get_context("spawn").Process(
            target=feedback_load, args=(server.url, answers, load_events, 8, args.load_rate), daemon=True
        )
        load.start()
        loaded = drive_chat(server, settings, concurrency=4, num_prompts=args.chat_prompts, seed=3)
        load.terminate()
    results = {
        "events": len(latencies),
        "statuses": statuses,
        "events_per_s": len(latencies) / elapsed,
        "latency_p50_ms": 1000 * percentile(latencies, 50),
        "latency_p99_ms": 1000 * percentile(latencies, 99),
        "redis_benchmark_xadd_per_s": ceiling,
        "chat_quiet": quiet,
        "chat_under_feedback_load": loaded,
        "ttft_median_ratio": loaded["median_ttft_ms"] / quiet["median_ttft_ms"],
    }
    table = figure_table(
        [
            (f"feedback events/s through HTTP (concurrency {args.concurrency})", f"{results['events_per_s']:.0f}"),
            ("feedback latency p50 / p99 ms", f"{results['latency_p50_ms']:.1f} / {results['latency_p99_ms']:.1f}"),
            ("response statuses", str(statuses)),
            ("redis-benchmark XADD/s, same Redis, 50 clients (ceiling)", str(ceiling or "n/a")),
            ("chat TTFT median ms, no feedback load", f"{quiet['median_ttft_ms']:.0f}"),
            (f"chat TTFT median ms, {args.load_rate:.0f} feedback events/s", f"{loaded['median_ttft_ms']:.0f}"),
            ("TTFT median ratio (loaded / quiet)", f"{results['ttft_median_ratio']:.3f}"),
        ]
    )
    write_results(args.out, args, results, table)


if __name__ == "__main__":
    main()
