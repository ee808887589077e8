"""One closed-loop run against a running system: simulated users chat and give feedback for a while, then the
report is written from what they saw and from the admin API (training rounds, version audit trails)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path

import httpx

from client.errors import ClientError
from client.simulation.preferences import SHIPPED, resolve
from client.simulation.prompt_set import load_prompts
from client.simulation.report import share, write
from client.simulation.users import MODES, Behaviour, Turn, simulate

log = logging.getLogger(__name__)

PROGRESS_S = 60.0


class Progress:
    """Collects the turns and logs the running satisfied share once a minute."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.last = time.monotonic()

    def __call__(self, turns: list[Turn]) -> None:
        self.turns.extend(turns)
        if time.monotonic() - self.last >= PROGRESS_S:
            self.last = time.monotonic()
            recent = [t for t in self.turns[-60:] if not t.regeneration]
            log.info(
                "simulation progress",
                extra={
                    "answers": len(self.turns),
                    "recent_satisfied": share(recent).rate,
                    "recent_versions": sorted({t.version for t in recent}),
                },
            )


def preference_name(spec: str) -> str:
    """An argparse type: a name that names no preference fails before any user starts, as a usage error."""
    try:
        resolve(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return spec


def add_simulation_args(parser: argparse.ArgumentParser) -> None:
    """The options of a run, shared by ``chatloop simulate`` and ``bench/loop.py``."""
    parser.add_argument(
        "--preference",
        required=True,
        type=preference_name,
        help=f"the users' hidden taste: {', '.join(SHIPPED)}, or any package.module:function",
    )
    parser.add_argument("--minutes", type=float, default=60.0, help="how long the users chat (default: 60)")
    parser.add_argument("--users", type=int, default=6, help="simulated users (default: 6)")
    parser.add_argument("--think-seconds", type=float, default=5.0, help="mean pause between turns (default: 5)")
    parser.add_argument(
        "--mode",
        choices=sorted(MODES),
        default="attentive",
        help="how the users give feedback, the shares below unless given: "
        + "; ".join(f"{name} {shares}" for name, shares in MODES.items()),
    )
    parser.add_argument("--silent-share", type=float, help="turns with no feedback")
    parser.add_argument("--random-share", type=float, help="turns rated at random")
    parser.add_argument("--thumb-only-share", type=float, help="turns with one honest thumb, no regeneration")
    parser.add_argument("--max-tokens", type=int, default=96, help="longest answer (default: 96)")
    parser.add_argument("--seed", type=int, default=0, help="of the users' prompts, pauses and choices (default: 0)")


def behaviour_from(args: argparse.Namespace) -> Behaviour:
    """The users the options describe: each share given, or else the mode's. ClientError for shares that do not
    add up, before any user starts."""
    given = {"silent": args.silent_share, "random": args.random_share, "thumb_only": args.thumb_only_share}
    try:
        shares = replace(MODES[args.mode], **{name: share for name, share in given.items() if share is not None})
    except ValueError as exc:
        raise ClientError(str(exc)) from exc
    return Behaviour(
        users=args.users, shares=shares, think_seconds=args.think_seconds, max_tokens=args.max_tokens, seed=args.seed
    )


def admin_get(url: str, admin_key: str, path: str) -> list[dict]:
    headers = {"Authorization": f"Bearer {admin_key}"}
    response = httpx.get(f"{url}/v1/admin{path}", headers=headers, timeout=60)
    response.raise_for_status()
    return response.json()["data"]


def run_experiment(
    url: str,
    user_key: str,
    admin_key: str,
    preference: str,
    minutes: float,
    behaviour: Behaviour,
    out: Path,
    command: str,
) -> dict:
    judge = resolve(preference)
    progress = Progress()
    started = time.time()
    try:
        asyncio.run(simulate(url, user_key, judge, load_prompts(), behaviour, minutes * 60, progress))
    except KeyboardInterrupt:
        # Ctrl-C (SIGINT) ends the run early; what the users saw until then is still worth a report.
        log.warning("simulation stopped early", extra={"minutes": round((time.time() - started) / 60, 1)})
    rounds = admin_get(url, admin_key, "/rounds?limit=1000")
    versions = admin_get(url, admin_key, "/versions")
    return write(out, progress.turns, rounds, versions, started, command, preference)
