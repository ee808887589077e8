"""The closed loop, end to end: start the whole system (``chatloop up``: server, trainer loop, local Redis) in a
fresh data folder, let simulated users teach it a hidden preference for a while, and report how the satisfied
share moved, round by round (``client/simulation/``).

New versions go live by the real path: the trainer registers candidates, and the server's autopilot makes each
new candidate the canary and promotes a canary that is not worse. Those automatic steps are off by default and
switched on here through configuration (``EXPERIMENT`` below; any ``CHATLOOP_*`` variable set in the environment
wins over it).

    .venv/bin/python bench/loop.py --preference client.simulation.preferences:concise --minutes 60

Ctrl-C (or SIGINT) ends the users' chat early and still writes the report.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from harness import running, up_command
from report import default_out

from client.cli import CHATTY_LOGGERS
from client.errors import ClientError
from client.simulation.experiment import add_simulation_args, behaviour_from, run_experiment
from core.config import LOCAL_ADMIN_KEY, LOCAL_API_KEY, Settings
from core.logs import configure_logging

EXPERIMENT = {
    "CHATLOOP_ROLLOUT__AUTO_CANARY": "true",
    "CHATLOOP_ROLLOUT__AUTO_CANARY_PERCENT": "50",
    "CHATLOOP_ROLLOUT__AUTO_PROMOTE": "true",
    "CHATLOOP_ROLLOUT__PROMOTE_MIN_ANSWERS": "20",
    # Six simulated users split in two leave a canary one or two of them often enough that the default (five
    # distinct users a side) would stall the loop for good; these users are honest, which the rule does not assume.
    "CHATLOOP_ROLLOUT__MIN_CANARY_USERS": "1",
    "CHATLOOP_TRAINER__MIN_NEW_PAIRS": "24",
    "CHATLOOP_TRAINER__MAX_WAIT_MINUTES": "3",
    "CHATLOOP_TRAINER__POLL_SECONDS": "5",
}
"""The experiment's switches: automatic canary and promotion, and rounds as soon as a few pairs are in. The training
signal's rules (eligibility, per-principal quotas and share) stay at their defaults."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_simulation_args(parser)
    parser.add_argument("--out", type=Path, default=default_out("loop"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        behaviour = behaviour_from(args)  # before the system starts
    except ClientError as exc:
        sys.exit(str(exc))
    configure_logging("INFO")
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(logging.WARNING)
    settings = Settings()
    args.out.mkdir(parents=True, exist_ok=True)
    experiment = {**EXPERIMENT, **{k: v for k, v in os.environ.items() if k.startswith("CHATLOOP_")}}
    command = " ".join(
        [
            *(f"{k}={shlex.quote(v)}" for k, v in os.environ.items() if k.startswith("CHATLOOP_")),
            ".venv/bin/python bench/loop.py",
            *map(shlex.quote, sys.argv[1:]),
        ]
    )
    with running("loop", up_command, settings, args.out, {**experiment, "CHATLOOP_LOG_LEVEL": "INFO"}) as system:
        summary = run_experiment(
            system.url,
            LOCAL_API_KEY,
            LOCAL_ADMIN_KEY,
            args.preference,
            args.minutes,
            behaviour,
            args.out,
            command,
        )
    print((args.out / "report.md").read_text())
    print(f"rise: {summary['rise_pp']} pp; folder: {args.out}")


if __name__ == "__main__":
    main()
