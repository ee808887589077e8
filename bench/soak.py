"""The soak: the whole system (``chatloop up``) under mixed load for half an hour, with the faults and operations a
week brings (training rounds, promotions, a rollback, Redis killed and started again), then what it cost.

Load: eight simulated users at once, each streaming an answer, rating it, and half the time regenerating it and
choosing between the two (a pair for the trainer). Meanwhile an operator promotes the first candidate as a canary,
then makes it active, makes a later candidate active, and rolls back; halfway through, Redis is killed with
``-9``, and chatloop starts it again on its append-only file (``core/local_redis.py``). Rounds are shortened (no
PPO stage, a short gate that lets every candidate through) so that two fit in the half hour on two cores: the soak
asks whether the system holds up, not whether it learns (``bench/loop.py`` asks that).

The report: requests by kind and status, during the Redis outage and outside it (no 5xx outside it; while Redis is
away feedback is a 503 and chat goes on); feedback events acknowledged against those stored (none lost but for
AOF's fsync window before the kill); the resident memory of the server (its API process and engine) after warm-up
(once the first canary was served: vLLM allocates its LoRA buffers then) and at the end; Redis's memory against
what the items it holds should take (``bench/redis_memory.py``'s bytes per item).

    .venv/bin/python bench/soak.py [--minutes 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import psutil
import redis
import redis.asyncio as aioredis
from harness import ENGINE_PROCESSES, Server, running, up_command
from report import default_out, figure_table, write_results

from client.cli import CHATTY_LOGGERS
from client.simulation.prompt_set import load_prompts
from core import keys
from core.config import LOCAL_ADMIN_KEY, LOCAL_API_KEY, Settings
from core.logs import configure_logging

log = logging.getLogger("soak")

SOAK = {
    "CHATLOOP_TRAINER__MIN_NEW_PAIRS": "16",
    "CHATLOOP_TRAINER__MAX_WAIT_MINUTES": "3",
    "CHATLOOP_TRAINER__POLL_SECONDS": "5",
    "CHATLOOP_PPO__ROLLOUTS": "0",
    "CHATLOOP_GATE__EVAL_PROMPTS": "4",
    "CHATLOOP_GATE__REWARD_TOLERANCE_SE": "100",
    "CHATLOOP_FEEDBACK_PER_MINUTE": "100000",
    "CHATLOOP_PAIRS_PER_HOUR": "100000",
}
"""Short rounds that a candidate passes, and limits the load stays under."""
USERS = 8
LIMITS = httpx2.Limits(max_connections=USERS + 4)
"""The clients are httpx2's, as the simulated users' (``client/simulation/users.py`` says why)."""
MAX_TOKENS = 64
FSYNC_WINDOW_S = 2.0
"""AOF ``everysec``: what was acknowledged in the last second or two before a kill may be lost (docs/faults.md)."""
SETTLE_S = 10.0
"""After Redis is back: time for connections to be made again before a 5xx counts against the system."""
CANARY_MINUTES = 3.0
BYTES_PER_ITEM = {"completion records": 1795, "pairs": 2063, "feedback events": 375}
"""docs/benchmarks.md, "Redis memory per item" (640-character answers: the soak's are shorter)."""
MEMORY_PERIOD_S = 30.0


@dataclass
class Outcome:
    at: float
    kind: str
    status: str
    """The HTTP status, or what failed in transport."""
    code: str | None = None
    """An error's ``code`` in OpenAI's shape."""
    detail: str | None = None
    """For a transport failure: what the client's connection did before it (``RequestTrace``) and the error's causes."""


class RequestTrace:
    """httpcore's trace of one request (``extensions={"trace": ...}``): whether it opened a connection or reused an
    idle one, and how far it got, so that a transport failure says where it happened."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.steps: list[str] = []
        self.body_bytes = 0

    async def __call__(self, event: str, info: dict) -> None:
        self.steps.append(f"{event} at {1000 * (time.monotonic() - self.started):.0f} ms")

    def describe(self, exc: BaseException) -> str:
        causes = []
        while (exc := exc.__cause__ or exc.__context__) is not None and len(causes) < 4:
            causes.append(repr(exc))
        connection = "new connection" if any("connect_tcp" in step for step in self.steps) else "reused connection"
        return (
            f"{connection}; {self.body_bytes} body bytes read; steps: {', '.join(self.steps)}; "
            f"caused by: {' <- '.join(causes) or 'nothing'}"
        )


TCP_COUNTERS = {
    "/proc/net/netstat": ("TCPAbortOnData", "TCPAbortOnClose", "TCPAbortOnTimeout"),
    "/proc/net/snmp": ("OutRsts", "EstabResets"),
}
"""The kernel's counts of connections reset on this host: ``TCPAbortOnData`` is a socket closed with data unread,
whose peer gets a reset (``ReadError('')`` in httpx)."""


def tcp_counters() -> dict[str, int]:
    counts = {}
    for path, names in TCP_COUNTERS.items():
        lines = Path(path).read_text().splitlines()
        for header, values in zip(lines[::2], lines[1::2], strict=True):
            pairs = zip(header.split()[1:], values.split()[1:], strict=True)
            counts.update((name, int(value)) for name, value in pairs if name in names)
    return counts


def error_code(response: httpx2.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class Soak:
    """What the soak saw: every request's outcome, the feedback events acknowledged, the operations and memory."""

    started: float = field(default_factory=time.monotonic)
    outcomes: list[Outcome] = field(default_factory=list)
    acknowledged: list[tuple[float, str]] = field(default_factory=list)
    operations: list[tuple[float, str]] = field(default_factory=list)
    memory: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    outage: tuple[float, float] | None = None
    """When Redis was killed, and when it answered again."""
    rounds: list[dict] = field(default_factory=list)
    tcp_at_start: dict[str, int] = field(default_factory=tcp_counters)

    def saw(self, kind: str, status: object, code: str | None = None, detail: str | None = None) -> None:
        self.outcomes.append(Outcome(time.monotonic(), kind, str(status), code, detail))

    def failed(self, kind: str, exc: httpx2.HTTPError, trace: RequestTrace) -> None:
        self.saw(kind, type(exc).__name__, detail=f"{time.strftime('%H:%M:%S')}, {trace.describe(exc)}")

    def answered(self, kind: str, response: httpx2.Response) -> None:
        self.saw(kind, response.status_code, None if response.is_success else error_code(response))

    def minute(self, at: float) -> float:
        return round((at - self.started) / 60, 2)

    def did(self, operation: str) -> None:
        self.operations.append((time.monotonic() - self.started, operation))
        log.info("operation", extra={"operation": operation})

    def phase(self, at: float) -> str:
        if self.outage is not None and self.outage[0] <= at <= self.outage[1] + SETTLE_S:
            return "Redis outage"
        return "otherwise"


async def stream_answer(
    http: httpx2.AsyncClient, soak: Soak, messages: list[dict], user: str, regenerate_of: str | None = None
) -> str | None:
    """A streamed answer's completion id, or None when it failed (counted either way)."""
    body = {"model": "chatloop", "messages": messages, "user": user, "stream": True, "max_tokens": MAX_TOKENS}
    if regenerate_of is not None:
        body["metadata"] = {"regenerate_of": regenerate_of}
    trace = RequestTrace()
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body, extensions={"trace": trace}) as response:
            if response.status_code != 200:
                await response.aread()
                soak.answered("chat", response)
                return None
            completion_id, done = None, False
            async for line in response.aiter_lines():
                trace.body_bytes += len(line) + 1
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    chunk = json.loads(line.removeprefix("data: "))
                    if "error" in chunk:
                        soak.saw("chat", f"error in stream: {chunk['error'].get('code')}")
                        return None
                    completion_id = chunk["id"]
            soak.saw("chat", 200 if done else "stream cut short")
            return completion_id if done else None
    except httpx2.HTTPError as exc:
        soak.failed("chat", exc, trace)
        return None


async def give_feedback(http: httpx2.AsyncClient, soak: Soak, body: dict) -> None:
    trace = RequestTrace()
    try:
        response = await http.post("/v1/feedback", json=body, extensions={"trace": trace})
    except httpx2.HTTPError as exc:
        soak.failed("feedback", exc, trace)
        return
    soak.answered("feedback", response)
    if response.status_code == 200:
        soak.acknowledged.append((time.monotonic(), response.json()["id"]))


async def user_turns(http: httpx2.AsyncClient, soak: Soak, user: str, prompts: list[str], deadline: float) -> None:
    """Back-to-back turns: an answer and its rating; half the time a regeneration, its rating and a choice."""
    rng = random.Random(user)
    while time.monotonic() < deadline:
        messages = [{"role": "user", "content": rng.choice(prompts)}]
        first = await stream_answer(http, soak, messages, user)
        if first is None:
            await asyncio.sleep(1)
            continue
        liked = rng.random() < 0.5
        await give_feedback(http, soak, {"completion_id": first, "rating": "up" if liked else "down", "user": user})
        if liked:
            continue
        second = await stream_answer(http, soak, messages, user, regenerate_of=first)
        if second is None:
            continue
        chosen, rejected = (first, second) if rng.random() < 0.5 else (second, first)
        choice = {"chosen": {"completion_id": chosen}, "rejected": {"completion_id": rejected}, "user": user}
        await give_feedback(http, soak, choice)


class Operator:
    """Promotes candidates as they come and rolls back once, through the admin API, as a person on /admin would."""

    def __init__(self, http: httpx2.AsyncClient, soak: Soak, deadline: float):
        self.http = http
        self.soak = soak
        self.deadline = deadline
        self.canary_since: float | None = None
        self.promoted: list[str] = []
        self.rolled_back = False

    async def call(self, method: str, path: str, body: dict | None = None) -> dict | None:
        try:
            response = await self.http.request(method, f"/v1/admin{path}", json=body)
        except httpx2.HTTPError as exc:
            self.soak.saw("admin", type(exc).__name__)
            return None
        self.soak.answered("admin", response)
        return response.json() if response.status_code == 200 else None

    async def run(self) -> None:
        while time.monotonic() < self.deadline:
            await asyncio.sleep(10)
            listed = await self.call("GET", "/versions")
            if listed is not None:
                await self.step(listed)

    async def step(self, listed: dict) -> None:
        routing = listed["routing"]["stored"]
        candidates = sorted(
            (v["id"] for v in listed["data"] if v["state"] == "candidate"), key=lambda v: int(v.lstrip("v"))
        )
        if routing["canary"] is not None:
            if time.monotonic() - (self.canary_since or time.monotonic()) > CANARY_MINUTES * 60:
                await self.promote(routing["canary"], None)
        elif candidates and not self.promoted:
            await self.promote(candidates[-1], 50.0)
        elif candidates and len(self.promoted) < 4:
            await self.promote(candidates[-1], None)
        elif len(self.promoted) >= 3 and not self.rolled_back and self.deadline - time.monotonic() < 300:
            if await self.call("POST", "/rollback", {"reason": "soak"}) is not None:
                self.rolled_back = True
                self.soak.did(f"rolled back from {routing['active']}")

    async def promote(self, version: str, canary_percent: float | None) -> None:
        body = {"reason": "soak", "canary_percent": canary_percent}
        if await self.call("POST", f"/versions/{version}/promote", body) is None:
            return
        self.promoted.append(version)
        self.canary_since = time.monotonic() if canary_percent else None
        self.soak.did(f"promoted {version}" + (f" as a {canary_percent:.0f}% canary" if canary_percent else ""))


def processes(server: Server) -> dict[str, list[psutil.Process]]:
    """The server's API process and engine, and the trainer (Redis's memory is read from Redis)."""
    roles: dict[str, list[psutil.Process]] = {"server": [server.process], "trainer": []}
    for child in server.process.children(recursive=True):
        try:
            name, command = child.name(), child.cmdline()
        except psutil.Error:  # gone meanwhile
            continue
        if name in ENGINE_PROCESSES.values():
            roles["server"].append(child)
        elif "trainer" in command:
            roles["trainer"].append(child)
    return roles


def resident_mib(server: Server) -> dict[str, int]:
    def rss(group: list[psutil.Process]) -> int:
        total = 0
        for process in group:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total >> 20

    return {role: rss(group) for role, group in processes(server).items()}


async def watch_memory(server: Server, soak: Soak, deadline: float) -> None:
    while time.monotonic() < deadline:
        soak.memory.append((time.monotonic() - soak.started, resident_mib(server)))
        await asyncio.sleep(MEMORY_PERIOD_S)


async def kill_redis(server: Server, soak: Soak, at: float) -> None:
    """Kill the local Redis with ``-9`` at ``at``; the outage lasts until chatloop has started it again."""
    await asyncio.sleep(max(at - time.monotonic(), 0))
    (victim,) = (child for child in server.process.children() if child.name() == "redis-server")
    killed = time.monotonic()
    victim.kill()
    soak.did("Redis killed with -9")
    client = aioredis.Redis.from_url(server.redis_url, socket_timeout=1, socket_connect_timeout=1)
    while True:
        await asyncio.sleep(0.1)
        with contextlib.suppress(redis.RedisError, OSError):
            if await client.ping():
                break
    await client.aclose()
    soak.outage = (killed, time.monotonic())
    soak.did("Redis answers again, started by chatloop on its append-only file")


async def soak_for(server: Server, minutes: float, soak: Soak) -> None:
    deadline = soak.started + minutes * 60
    prompts = load_prompts()
    user_headers = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
    admin_headers = {"Authorization": f"Bearer {LOCAL_ADMIN_KEY}"}
    async with (
        httpx2.AsyncClient(base_url=server.url, headers=user_headers, timeout=120, limits=LIMITS) as http,
        httpx2.AsyncClient(base_url=server.url, headers=admin_headers, timeout=120) as admin,
    ):
        operator = Operator(admin, soak, deadline)
        work = [user_turns(http, soak, f"soak-{i}", prompts, deadline) for i in range(USERS)]
        await asyncio.gather(
            kill_redis(server, soak, soak.started + minutes * 30),
            operator.run(),
            watch_memory(server, soak, deadline),
            *work,
        )
        rounds = await operator.call("GET", "/rounds")
    soak.rounds = (rounds or {}).get("data", [])


def lost_events(soak: Soak, client: redis.Redis) -> tuple[int, int]:
    """Acknowledged events not stored: (those inside the fsync window before the kill, those outside it)."""
    stored = {json.loads(fields["event"])["id"] for _, fields in client.xrange(keys.EVENTS_STREAM)}
    lost = [at for at, event in soak.acknowledged if event not in stored]
    killed = soak.outage[0] if soak.outage else float("inf")
    inside = sum(killed - FSYNC_WINDOW_S <= at <= killed for at in lost)
    return inside, len(lost) - inside


def redis_figures(client: redis.Redis) -> dict[str, object]:
    counts = {
        "completion records": client.xlen(keys.COMPLETIONS_STREAM),
        "pairs": client.xlen(keys.PAIRS_STREAM),
        "feedback events": client.xlen(keys.EVENTS_STREAM),
    }
    modelled = sum(BYTES_PER_ITEM[kind] * count for kind, count in counts.items())
    used = client.info("memory")["used_memory"]
    slowest = [
        f"{entry['duration'] / 1000:.0f} ms: {' '.join(str(part) for part in entry['command'].split()[:2])}"
        for entry in client.slowlog_get(10)
    ]
    return {**counts, "used_mib": used / 2**20, "modelled_mib": modelled / 2**20, "slowest_commands": slowest}


def warmed_up(soak: Soak) -> float:
    """Seconds into the soak when it is warm: a memory period after the first canary was promoted, for vLLM
    allocates its LoRA buffers when it first serves an adapter (once, some 400 MiB); two minutes in when there was no
    canary."""
    canaries = [at for at, what in soak.operations if "canary" in what]
    return canaries[0] + MEMORY_PERIOD_S if canaries else 120


def memory_after(soak: Soak, seconds: float) -> dict[str, int]:
    return next((m for at, m in soak.memory if at >= seconds), soak.memory[-1][1])


def summary(soak: Soak, client: redis.Redis) -> dict:
    by_status = Counter(f"{o.kind} {o.status} {o.code or ''} ({soak.phase(o.at)})" for o in soak.outcomes)
    server_errors = [o for o in soak.outcomes if o.status.startswith("5") and soak.phase(o.at) == "otherwise"]
    failures = [o for o in soak.outcomes if not o.status.isdigit()]
    warm = memory_after(soak, warmed_up(soak))
    early = memory_after(soak, 120)
    end = soak.memory[-1][1]
    inside, outside = lost_events(soak, client)
    return {
        "requests": dict(sorted(by_status.items())),
        "server_errors_outside_the_outage": len(server_errors),
        "transport_failures": len(failures),
        "unexpected": [
            f"{soak.minute(o.at)} min: {o.kind} {o.status} {o.code or ''} {o.detail or ''}".strip()
            for o in server_errors + failures
        ],
        "tcp_resets": {name: count - soak.tcp_at_start[name] for name, count in tcp_counters().items()},
        "outage_minutes": [soak.minute(at) for at in soak.outage or ()],
        "memory_series": [[round(at / 60, 1), m["server"], m["trainer"]] for at, m in soak.memory],
        "acknowledged_events": len(soak.acknowledged),
        "lost_in_fsync_window": inside,
        "lost_otherwise": outside,
        "memory_mib_after_warm_up": warm,
        "memory_mib_at_end": end,
        "server_growth": end["server"] / warm["server"] - 1,
        "server_growth_from_minute_2": end["server"] / early["server"] - 1,
        "redis": redis_figures(client),
        "operations": [f"{at / 60:.1f} min: {what}" for at, what in soak.operations],
        "rounds": [{k: r.get(k) for k in ("id", "parent", "state")} for r in soak.rounds],
    }


def table(results: dict) -> str:
    redis_use = results["redis"]
    rows = [
        *((f"requests: {name}", str(count)) for name, count in results["requests"].items()),
        ("5xx outside the Redis outage", str(results["server_errors_outside_the_outage"])),
        ("requests failed in transport or cut short", str(results["transport_failures"])),
        ("TCP resets on this host (kernel counters)", json.dumps(results["tcp_resets"])),
        *(("unexpected", what) for what in results["unexpected"]),
        ("Redis outage (killed, answering again), minutes", str(results["outage_minutes"])),
        ("feedback events acknowledged", str(results["acknowledged_events"])),
        (
            "of them lost: in the fsync window / otherwise",
            f"{results['lost_in_fsync_window']} / {results['lost_otherwise']}",
        ),
        *(
            (f"resident MiB, {role}: after warm-up → end", f"{results['memory_mib_after_warm_up'][role]} → {mib}")
            for role, mib in results["memory_mib_at_end"].items()
        ),
        ("server memory growth after warm-up", f"{100 * results['server_growth']:+.1f}%"),
        ("server memory growth from minute 2", f"{100 * results['server_growth_from_minute_2']:+.1f}%"),
        ("Redis items: records / pairs / events", " / ".join(str(redis_use[k]) for k in BYTES_PER_ITEM)),
        ("Redis used / modelled MiB", f"{redis_use['used_mib']:.1f} / {redis_use['modelled_mib']:.1f}"),
        *(("Redis slow log (since its restart)", entry) for entry in redis_use["slowest_commands"]),
        *(("operation", what) for what in results["operations"]),
        *(("round", json.dumps(r)) for r in results["rounds"]),
    ]
    return figure_table(rows)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=default_out("soak"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    configure_logging("INFO")
    for chatty in CHATTY_LOGGERS:  # httpx2's, and httpx's (the harness's readiness probe)
        logging.getLogger(chatty).setLevel(logging.WARNING)
    settings = Settings()
    args.out.mkdir(parents=True, exist_ok=True)
    soak = Soak()
    with running("soak", up_command, settings, args.out, {**SOAK, "CHATLOOP_LOG_LEVEL": "INFO"}) as server:
        soak.started, soak.tcp_at_start = time.monotonic(), tcp_counters()
        asyncio.run(soak_for(server, args.minutes, soak))
        results = summary(soak, redis.Redis.from_url(server.redis_url, decode_responses=True))
    write_results(args.out, args, results, table(results))


if __name__ == "__main__":
    main()
