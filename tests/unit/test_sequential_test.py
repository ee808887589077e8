"""The autopilot's rollback test (feedback/sequential_test.py): valid when read after every answer, as the
autopilot reads it, where a fixed-sample z-test is not."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from feedback.sequential_test import worse_rate

ALPHA = 0.05
MIN_ANSWERS = 20
"""As ``ROLLOUT__ROLLBACK_MIN_ANSWERS``: no look before each side has this many."""

Test = Callable[[int, int, int, int], bool]


def msprt(down_a: int, served_a: int, down_b: int, served_b: int) -> bool:
    return worse_rate(down_a, served_a, down_b, served_b).p_value < ALPHA


def z_test(down_a: int, served_a: int, down_b: int, served_b: int) -> bool:
    """The one-sided pooled two-proportion z-test at 95% that the autopilot used before."""
    pooled = (down_a + down_b) / (served_a + served_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / served_a + 1 / served_b))
    return spread > 0 and (down_a / served_a - down_b / served_b) / spread > 1.645


def first_rejection(test: Test, canary_rate: float, active_rate: float, answers: int, rng: random.Random) -> int | None:
    """The answer (per side) at which reading ``test`` after every answer first says "worse", if it ever does."""
    down_canary = down_active = 0
    for served in range(1, answers + 1):
        down_canary += rng.random() < canary_rate
        down_active += rng.random() < active_rate
        if served >= MIN_ANSWERS and test(down_canary, served, down_active, served):
            return served
    return None


def rejections(test: Test, canary_rate: float, active_rate: float, runs: int = 400, answers: int = 300) -> list[int]:
    rng = random.Random(7)
    found = [first_rejection(test, canary_rate, active_rate, answers, rng) for _ in range(runs)]
    return [served for served in found if served is not None]


def test_a_canary_no_worse_is_rarely_rolled_back_however_often_the_test_is_read() -> None:
    """Equal rates, read after each of 300 answers a side: the mSPRT rolls back at most α of such canaries; the
    z-test, at 95% on each look, more than one in six (about one in four)."""
    assert len(rejections(msprt, 0.2, 0.2)) / 400 <= ALPHA
    assert len(rejections(z_test, 0.2, 0.2)) / 400 > 0.15


def test_a_clearly_worse_canary_is_caught_within_a_few_dozen_answers() -> None:
    caught = rejections(msprt, 0.5, 0.2)
    assert len(caught) == 400
    assert sorted(caught)[len(caught) // 2] <= 50, "the median canary rated down 50% against 20% is caught by 50"


def test_only_a_higher_rate_is_evidence() -> None:
    assert worse_rate(10, 100, 30, 100).p_value == 1.0
    assert worse_rate(0, 0, 0, 0).p_value == 1.0
    assert worse_rate(30, 100, 10, 100).p_value < 0.01


def test_all_down_against_none_down_is_decided_on_a_handful() -> None:
    """Six answers a side, every canary answer rated down and no active one: Jeffreys' half answer gives the
    counts a spread, so the test decides rather than dividing by zero."""
    evidence = worse_rate(6, 6, 0, 6)
    assert evidence.difference == 1.0 and evidence.p_value < 0.001
    assert worse_rate(100_000, 100_000, 0, 100_000).likelihood_ratio == pytest.approx(math.exp(700.0))
