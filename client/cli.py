"""The ``chatloop`` command: one entry point for serving, chatting, training, feedback export and set-up.

Each subcommand imports what it needs when it runs, so ``chatloop --help`` does not load torch or vLLM.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path

import redis

from core.config import LOCAL_API_KEY, Settings, get_settings
from core.logs import configure_logging

log = logging.getLogger("chatloop")

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from server.app import create_app

    settings = settings.model_copy(update={"host": args.host or settings.host, "port": args.port or settings.port})
    if settings.uses_default_keys and settings.host not in LOOPBACK_HOSTS:
        log.warning(
            "serving beyond loopback with the documented local keys: set CHATLOOP_API_KEYS and CHATLOOP_ADMIN_KEY"
        )
    log.info("chatloop serving", extra={"url": f"http://{settings.host}:{settings.port}"})
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,
        loop="uvloop",
        http="httptools",
    )


def _up(args: argparse.Namespace, settings: Settings) -> None:
    """The whole system on the embedded defaults: Redis (unless REDIS_URL), the trainer loop, the server."""
    from core.local_redis import start_local_redis

    _prepare_model(args, settings)
    local = None if settings.redis_url else start_local_redis(settings.redis_dir)
    redis_url = settings.redis_url or local.url
    # The trainer's priority is a setting. At the default (0) it shares fairly the cores that the CPU engine's worker
    # leaves free: at nice 10 the vLLM scheduler's busy polling there left a round almost no CPU (docs/benchmarks.md).
    trainer = subprocess.Popen(
        [sys.executable, "-m", "client.cli", "trainer"],
        env={**os.environ, "REDIS_URL": redis_url},
        preexec_fn=lambda: os.nice(settings.trainer.niceness),
    )
    base = f"http://{args.host or settings.host}:{args.port or settings.port}"
    print(
        f"chatloop is starting (the engine takes about a minute to load)\n"
        f"  chat UI      {base}/\n"
        f"  ops page     {base}/admin   (admin key)\n"
        f"  OpenAI API   {base}/v1   (model '{settings.model_alias}')\n"
        f"  readiness    {base}/ready\n"
        f"  metrics      {base}/metrics\n"
        f"  trainer      pid {trainer.pid}, a round once {settings.trainer.min_new_pairs} new pairs wait\n"
        f"  keys         see README (local defaults apply unless CHATLOOP_API_KEYS is set)",
        flush=True,
    )
    try:
        _serve(args, settings.model_copy(update={"redis_url": redis_url}))
    finally:
        trainer.terminate()
        trainer.wait()
        if local is not None:
            local.stop()


def _prepare_model(_: argparse.Namespace, settings: Settings) -> None:
    from core.default_model import prepare_default_model

    if settings.model is not None:
        log.info("a model folder is configured; nothing to prepare", extra={"model": str(settings.model)})
        return
    print(prepare_default_model(settings.model_path))


@contextmanager
def _redis(settings: Settings) -> Iterator[redis.Redis]:
    """The configured Redis, or the local one of the data folder (started for the command if not running)."""
    from core.local_redis import start_local_redis

    local = None if settings.redis_url else start_local_redis(settings.redis_dir)
    client = redis.Redis.from_url(settings.redis_url or local.url)
    try:
        yield client
    finally:
        client.close()
        if local is not None:
            local.stop()


def _export(args: argparse.Namespace, settings: Settings) -> None:
    from feedback.export import export_pairs

    with _redis(settings) as client:
        written = export_pairs(client, args.out, since=args.since, version=args.version)
    print(f"{written} pairs written to {args.out}")


def _chat(args: argparse.Namespace, settings: Settings) -> None:
    """The terminal client. Library INFO lines (one per HTTP request) would interleave with the answers."""
    from client.terminal import run

    root = logging.getLogger()
    root.setLevel(max(root.level, logging.WARNING))
    run(
        url=(args.url or f"http://{settings.host}:{settings.port}").rstrip("/"),
        key=args.key or os.environ.get("CHATLOOP_KEY") or LOCAL_API_KEY,
        user=args.user or f"term-{secrets.token_hex(4)}",
        model=settings.model_alias,
        max_tokens=args.max_tokens,
    )


def _train(args: argparse.Namespace, settings: Settings) -> None:
    """Under ``accelerate launch`` every process runs this; only the main one opens Redis and prints the outcome.
    The others log warnings and errors only: their other lines would repeat the main process's, whose figures are
    already averaged over all processes (trainer/distributed.py)."""
    from trainer.distributed import is_main_process
    from trainer.loop import run_forever, train_once

    main = is_main_process()
    if not main:
        logging.getLogger().setLevel(logging.WARNING)
    with _redis(settings) if main else nullcontext() as client:
        if args.once:
            result = train_once(settings, client)
            if main:
                print(
                    f"{result.version.id} {result.version.state}: {result.reason}" if result.version else result.reason
                )
        else:
            run_forever(settings, client)


def _policy(args: argparse.Namespace, settings: Settings) -> None:
    from client.ops import AdminClient, run

    url = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    client = AdminClient(url, args.key or settings.admin_key.get_secret_value())
    run(client, args.action, getattr(args, "version", None), getattr(args, "canary", None), args.reason)


def _simulate(args: argparse.Namespace, settings: Settings) -> None:
    from client.simulation.experiment import behaviour_from, run_experiment

    summary = run_experiment(
        url=(args.url or f"http://{settings.host}:{settings.port}").rstrip("/"),
        user_key=args.key or os.environ.get("CHATLOOP_KEY") or LOCAL_API_KEY,
        admin_key=settings.admin_key.get_secret_value(),
        preference=args.preference,
        minutes=args.minutes,
        behaviour=behaviour_from(args),
        out=args.out,
        command=" ".join(["chatloop", *sys.argv[1:]]),
    )
    print((args.out / "report.md").read_text())
    log.info("simulation done", extra={"out": str(args.out), "rise_pp": summary["rise_pp"]})


def _add_simulate_command(commands: argparse._SubParsersAction) -> None:
    from client.simulation.experiment import add_simulation_args

    simulate = commands.add_parser("simulate", help="simulated users teach a running system a hidden preference")
    add_simulation_args(simulate)
    simulate.add_argument("--url", help="the server (default: http://CHATLOOP_HOST:CHATLOOP_PORT)")
    simulate.add_argument("--key", help="a user API key (default: CHATLOOP_KEY, else the local default key)")
    run_folder = Path("data/simulations") / datetime.now().strftime("%Y%m%d-%H%M%S")
    simulate.add_argument(
        "--out", type=Path, default=run_folder, help="the report's folder (default: data/simulations/<time>)"
    )
    simulate.set_defaults(run=_simulate)


def _add_policy_commands(commands: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the server (default: http://CHATLOOP_HOST:CHATLOOP_PORT)")
    common.add_argument("--key", help="the admin key (default: CHATLOOP_ADMIN_KEY)")
    common.add_argument("--reason", default="", help="kept in the audit trail")
    policy = commands.add_parser("policy", help="list policy versions, promote, canary, roll back, retire")
    policy.set_defaults(run=_policy)
    actions = policy.add_subparsers(dest="action", required=True)
    actions.add_parser("list", parents=[common], help="every version, its state and lineage, and the routing")
    actions.add_parser("show", parents=[common], help="one version in full").add_argument("version")
    promote = actions.add_parser(
        "promote", parents=[common], help="make a version active, or with --canary PCT the canary"
    )
    promote.add_argument("version")
    promote.add_argument("--canary", type=float, metavar="PCT", help="serve it to this share of users only")
    actions.add_parser("rollback", parents=[common], help="end the canary, or return to the previous active version")
    actions.add_parser("retire", parents=[common], help="take a version out of service").add_argument("version")


def _add_listen_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="interface to listen on (default: CHATLOOP_HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (default: CHATLOOP_PORT)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatloop", description="A chat server that learns from its users.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the OpenAI-compatible server with the embedded engine")
    _add_listen_args(serve)
    serve.set_defaults(run=_serve)
    up = commands.add_parser("up", help="prepare the model and start the whole system (what `make run` does)")
    _add_listen_args(up)
    up.set_defaults(run=_up)
    feedback = commands.add_parser("feedback", help="preference data").add_subparsers(dest="action", required=True)
    export = feedback.add_parser("export", help="write preference pairs as JSON lines (TRL's preference format)")
    export.add_argument("--out", type=Path, required=True, help="the .jsonl file to write")
    export.add_argument("--since", type=datetime.fromisoformat, help="only pairs made from this ISO date/time on")
    export.add_argument("--version", help="only pairs with an answer of this policy version")
    export.set_defaults(run=_export)
    chat = commands.add_parser("chat", help="chat in the terminal, rating answers with /up, /down and /regen")
    chat.add_argument("--url", help="the server (default: http://CHATLOOP_HOST:CHATLOOP_PORT)")
    chat.add_argument("--key", help="a user API key (default: CHATLOOP_KEY, else the local default key)")
    chat.add_argument("--user", help="the end-user id sent with chats and feedback (default: a random term-<hex>)")
    chat.add_argument("--max-tokens", type=int, default=512, help="longest answer, in tokens (default: 512)")
    chat.set_defaults(run=_chat)
    trainer = commands.add_parser("trainer", help="run training rounds whenever enough new pairs have come in")
    trainer.set_defaults(run=_train, once=False)
    train = commands.add_parser("train", help="run one training round now")
    train.add_argument("--once", action="store_true", required=True, help="one round, then exit")
    train.set_defaults(run=_train)
    _add_policy_commands(commands)
    _add_simulate_command(commands)
    prepare = commands.add_parser("prepare-model", help="convert the default model into the data folder")
    prepare.set_defaults(run=_prepare_model)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)
    run: Callable[[argparse.Namespace, Settings], None] = args.run
    run(args, settings)


if __name__ == "__main__":
    main(sys.argv[1:])
