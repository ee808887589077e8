"""How fast a promotion goes live on every replica, what it costs the requests in flight, and what serving a
trained (merged) version costs against the base model.

Part 1: two replicas on one Redis and one data folder, each under a steady load of streaming clients. The script
promotes versions (a canary made active, a candidate made active directly, a rollback) and records, for each, the
seconds from the admin call until every replica serves the new active version (each replica's applied routing),
the streamed tokens per second in the windows before and after the call, and failed requests.
Part 2: one server driven by vLLM's benchmark client (as ``bench/serve.py``) with the base model active, then
with a version active: the throughput ratio.

Versions are LoRA adapters with random weights (``tests/factories.py``): merged weights cost the same whatever
their values, so no training is needed to time swaps.

    .venv/bin/python bench/swap.py
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from harness import SERVED_NAME, chatloop_command, drive_chat, running
from report import default_out, figure_table, write_results

from core.config import LOCAL_ADMIN_KEY, LOCAL_API_KEY, Settings
from tests.factories import random_version

FAST_RECONCILE = {"CHATLOOP_ROLLOUT__RECONCILE_SECONDS": "5"}


@dataclass
class Load:
    """Streaming clients spread over the replicas; every content chunk's arrival time is kept (one token each)."""

    urls: list[str]
    clients: int
    max_tokens: int
    token_times: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, worker: int) -> None:
        url = self.urls[worker % len(self.urls)]
        headers = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
        body = {
            "model": SERVED_NAME,
            "messages": [{"role": "user", "content": f"Tell a story, {worker}."}],
            "max_tokens": self.max_tokens,
            "ignore_eos": True,
            "stream": True,
            "user": f"bench-{worker}",
        }
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            while not self.stop.is_set():
                try:
                    with http.stream("POST", "/v1/chat/completions", json=body) as response:
                        response.raise_for_status()
                        for line in response.iter_lines():
                            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                                self.token_times.append(time.monotonic())
                    self.requests += 1
                except Exception as exc:  # every failure counts, whatever its kind
                    self.errors.append(repr(exc))

    def rate(self, start: float, end: float) -> float:
        return sum(start <= t < end for t in self.token_times) / (end - start)


def applied_active(url: str) -> str | None:
    headers = {"Authorization": f"Bearer {LOCAL_ADMIN_KEY}"}
    applied = httpx.get(f"{url}/v1/admin/routing", headers=headers, timeout=30).json()["applied"]
    return applied and applied["active"]


def change(url: str, path: str, body: dict | None = None) -> dict:
    headers = {"Authorization": f"Bearer {LOCAL_ADMIN_KEY}"}
    response = httpx.post(f"{url}/v1/admin{path}", json=body or {}, headers=headers, timeout=120)
    response.raise_for_status()
    return response.json()


def timed_promotion(load: Load, urls: list[str], path: str, body: dict | None, window: float) -> dict:
    """Call the admin API on the first replica; wait until every replica serves the result; measure the load."""
    time.sleep(window)
    errors_before = len(load.errors)
    called = time.monotonic()
    target = change(urls[0], path, body)["stored"]["active"]
    live = {}
    while len(live) < len(urls):
        for url in urls:
            if url not in live and applied_active(url) == target:
                live[url] = time.monotonic() - called
        time.sleep(0.02)
    time.sleep(window)
    before, during = load.rate(called - window, called), load.rate(called, called + window)
    return {
        "action": f"{path} {body or ''}".strip(),
        "active": target,
        "seconds_to_every_replica": max(live.values()),
        "tok_s_before": before,
        "tok_s_after_call": during,
        "dip": 1 - during / before if before else float("nan"),
        "failed": len(load.errors) - errors_before,
    }


def swap_part(settings: Settings, out: Path, clients: int, window: float) -> tuple[list[dict], int]:
    with running("replica-1", chatloop_command, settings, out, FAST_RECONCILE) as first:
        client = redis.Redis.from_url(first.redis_url)
        versions_dir = first.data_dir / "versions"
        canary, direct = (random_version(client, versions_dir, settings.model_path, seed, scale=0.1) for seed in (1, 2))
        with running("replica-2", chatloop_command, settings, out, FAST_RECONCILE, replica_of=first) as second:
            urls = [first.url, second.url]
            load = Load(urls, clients, max_tokens=64)
            workers = [threading.Thread(target=load.run, args=(i,)) for i in range(clients)]
            for worker in workers:
                worker.start()
            try:
                change(urls[0], f"/versions/{canary}/promote", {"canary_percent": 10})
                steps = [
                    timed_promotion(load, urls, f"/versions/{canary}/promote", None, window),
                    timed_promotion(load, urls, f"/versions/{direct}/promote", None, window),
                    timed_promotion(load, urls, "/rollback", None, window),
                ]
            finally:
                load.stop.set()
                for worker in workers:
                    worker.join()
            return steps, load.requests


def merged_part(settings: Settings, out: Path, concurrency: int, prompts: int) -> dict:
    """vLLM's benchmark client against one server, base active and then a version active (merged)."""
    with running("merged", chatloop_command, settings, out) as server:
        drive_chat(server, settings, concurrency=4, num_prompts=8)
        base = drive_chat(server, settings, concurrency, prompts)
        version = random_version(
            redis.Redis.from_url(server.redis_url), server.data_dir / "versions", settings.model_path, seed=3, scale=0.1
        )
        change(server.url, f"/versions/{version}/promote")
        drive_chat(server, settings, concurrency=4, num_prompts=8)
        merged = drive_chat(server, settings, concurrency, prompts)
    return {"base": base, "version_active": merged, "ratio": merged["output_throughput"] / base["output_throughput"]}


def report(steps: list[dict], requests: int, merged: dict | None) -> str:
    rows = []
    for step in steps:
        rows += [
            (
                f"{step['action']}: seconds until every replica serves {step['active']}",
                f"{step['seconds_to_every_replica']:.2f}",
            ),
            (
                f"{step['action']}: tok/s before / after the call (dip)",
                f"{step['tok_s_before']:.0f} / {step['tok_s_after_call']:.0f} ({100 * step['dip']:.1f}%)",
            ),
            (f"{step['action']}: failed requests", str(step["failed"])),
        ]
    rows.append(("requests completed under load", str(requests)))
    if merged is not None:
        rows += [
            ("base active: output tok/s", f"{merged['base']['output_throughput']:.1f}"),
            ("version active (merged): output tok/s", f"{merged['version_active']['output_throughput']:.1f}"),
            ("throughput ratio version / base", f"{merged['ratio']:.3f}"),
        ]
    worst = max(step["seconds_to_every_replica"] for step in steps)
    rows.append(
        (
            "worst seconds to every replica (median)",
            f"{worst:.2f} ({statistics.median(s['seconds_to_every_replica'] for s in steps):.2f})",
        )
    )
    return figure_table(rows)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="streaming clients over both replicas")
    parser.add_argument("--window", type=float, default=10.0, help="seconds of load measured before and after")
    parser.add_argument("--concurrency", type=int, default=16, help="part 2: the client's concurrency")
    parser.add_argument("--num-prompts", type=int, default=64, help="part 2: prompts per run")
    parser.add_argument("--skip-merged", action="store_true", help="run part 1 only")
    parser.add_argument("--out", type=Path, default=default_out("swap"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    settings = Settings()
    args.out.mkdir(parents=True, exist_ok=True)
    steps, requests = swap_part(settings, args.out, args.clients, args.window)
    merged = None if args.skip_merged else merged_part(settings, args.out, args.concurrency, args.num_prompts)
    write_results(
        args.out, args, {"swaps": steps, "requests": requests, "merged": merged}, report(steps, requests, merged)
    )


if __name__ == "__main__":
    main()
