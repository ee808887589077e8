"""Sign-in latency, and what each way of authenticating costs a request, side by side in one run.

In process (the app as ``chatloop serve`` builds it, minus the engine, over httpx's ASGI transport) against its own
local redis-server, so the figures are the server's work, not a network's:

1. --signins password sign-ins one after another, then at --concurrency: latency p50/p95 and sign-ins per second.
   A sign-in hashes with argon2id (argon2-cffi's defaults), by design tens of milliseconds of CPU.
2. ``GET /v1/models`` --requests times with each credential: a bootstrap key (compared in memory), a managed key and
   a session cookie (read from Redis, then cached for the reconcile period). Prints p50 and the ratio to the bootstrap
   key's.

The per-account and per-address attempt limits are lifted for the run. Run it on a quiet machine:

    .venv/bin/python bench/signin.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import redis
import redis.asyncio as aioredis
from report import default_out, figure_table, write_results

from core.config import Settings
from core.local_redis import start_local_redis
from server.app import attach_redis, create_app

ADMIN_KEY = "sk-bench-admin"
USER_KEY = "sk-bench-user"
ORIGIN = "http://bench"
PASSWORD = "a bench password"


def ms(samples: list[float], share: float) -> float:
    return 1000 * statistics.quantiles(samples, n=100)[int(share * 100) - 1]


async def timed(call: Callable[[], Awaitable[httpx.Response]]) -> float:
    start = time.perf_counter()
    response = await call()
    assert response.status_code == 200, response.text
    return time.perf_counter() - start


async def measure(http: httpx.AsyncClient, args: argparse.Namespace) -> dict:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    link = (await http.post("/v1/admin/users", json={"name": "bench"}, headers=admin)).json()["link"]
    await http.post("/v1/auth/link", json={"token": link.split("#signin=")[1]})
    await http.post("/v1/account/password", json={"new_password": PASSWORD})
    managed = (await http.post("/v1/admin/keys", json={"name": "bench"}, headers=admin)).json()["key"]

    def signin() -> Awaitable[httpx.Response]:
        return http.post("/v1/auth/signin", json={"name": "bench", "password": PASSWORD})

    sequential = [await timed(signin) for _ in range(args.signins)]
    start = time.perf_counter()
    for _ in range(args.signins // args.concurrency):
        await asyncio.gather(*(timed(signin) for _ in range(args.concurrency)))
    parallel_rate = (args.signins // args.concurrency) * args.concurrency / (time.perf_counter() - start)

    credentials = {
        "bootstrap key": {"Authorization": f"Bearer {USER_KEY}"},
        "managed key": {"Authorization": f"Bearer {managed}"},
        "session cookie": {},
    }
    per_request = {}
    for name, headers in credentials.items():
        samples = [await timed(lambda h=headers: http.get("/v1/models", headers=h)) for _ in range(args.requests)]
        per_request[name] = ms(samples, 0.5)
    return {
        "signin_p50_ms": ms(sequential, 0.5),
        "signin_p95_ms": ms(sequential, 0.95),
        "signins_per_s_at_concurrency": parallel_rate,
        "models_p50_ms": per_request,
    }


async def run(args: argparse.Namespace, redis_url: str) -> dict:
    settings = Settings(
        _env_file=None,
        redis_url=redis_url,
        api_keys=[USER_KEY],
        admin_key=ADMIN_KEY,
        accounts={"signin_per_minute_account": 1_000_000, "signin_per_minute_address": 1_000_000},
    )
    app = create_app(settings)
    client = aioredis.from_url(redis_url)
    attach_redis(app, client, redis.Redis.from_url(redis_url))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN, headers={"Origin": ORIGIN}) as http:
        return await measure(http, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signins", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--out", type=Path, default=default_out("signin"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        local = start_local_redis(Path(folder))
        try:
            results = asyncio.run(run(args, local.url))
        finally:
            local.stop()
    base = results["models_p50_ms"]["bootstrap key"]
    rows = [
        ("sign-in p50 / p95", f"{results['signin_p50_ms']:.0f} / {results['signin_p95_ms']:.0f} ms"),
        (f"sign-ins per second at concurrency {args.concurrency}", f"{results['signins_per_s_at_concurrency']:.1f}"),
        *(
            (f"GET /v1/models p50, {name}", f"{p50:.2f} ms ({p50 / base:.2f}x the bootstrap key)")
            for name, p50 in results["models_p50_ms"].items()
        ),
    ]
    write_results(args.out, args, results, figure_table(rows))


if __name__ == "__main__":
    main()
