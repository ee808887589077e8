"""How simulated users give feedback (client/simulation/users.py: Shares, MODES) and how the command line picks
it (client/simulation/experiment.py)."""

from __future__ import annotations

import argparse
import random
from collections import Counter

import pytest

from client.errors import ClientError
from client.simulation.experiment import add_simulation_args, behaviour_from
from client.simulation.users import Behaviour


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_simulation_args(parser)
    return parser.parse_args(["--preference", "concise", *argv])


def reactions(behaviour: Behaviour, draws: int = 20_000) -> dict[str, float]:
    rng = random.Random(0)
    counts = Counter(behaviour.shares.reaction(rng.random()) for _ in range(draws))
    return {reaction: count / draws for reaction, count in counts.items()}


def test_casual_users_mostly_say_nothing_and_rarely_do_more_than_a_thumb() -> None:
    shares = reactions(behaviour_from(parsed("--mode", "casual")))
    assert shares["silent"] == pytest.approx(0.6, abs=0.02)
    assert shares["thumb"] == pytest.approx(0.3, abs=0.02)
    assert shares["full"] == pytest.approx(0.1, abs=0.02)
    assert "random" not in shares


def test_attentive_users_are_the_default_and_rate_nearly_everything() -> None:
    shares = reactions(behaviour_from(parsed()))
    assert shares["silent"] == pytest.approx(0.1, abs=0.02) and shares["random"] == pytest.approx(0.1, abs=0.02)
    assert shares["full"] == pytest.approx(0.8, abs=0.02) and "thumb" not in shares


def test_a_share_given_wins_over_the_modes() -> None:
    behaviour = behaviour_from(parsed("--mode", "casual", "--silent-share", "0.2"))
    assert (behaviour.shares.silent, behaviour.shares.thumb_only) == (0.2, 0.3)


def test_shares_that_add_up_to_one_exactly_are_taken() -> None:
    """0.34 + 0.56 + 0.1 is 1.0000000000000002 in floating point: still one."""
    behaviour = behaviour_from(parsed("--random-share", "0.34", "--silent-share", "0.56", "--thumb-only-share", "0.1"))
    assert reactions(behaviour).get("full", 0.0) < 0.001


@pytest.mark.parametrize("argv", [("--silent-share", "0.95"), ("--random-share", "-0.1"), ("--silent-share", "nan")])
def test_shares_that_do_not_add_up_are_refused_before_any_user_starts(argv: tuple[str, ...]) -> None:
    with pytest.raises(ClientError, match="add up to 1 at most"):
        behaviour_from(parsed(*argv))
