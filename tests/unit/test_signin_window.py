"""Sign-in attempts are counted over a sliding minute: attempts just before a minute's boundary still count just
after it, so nobody gets twice the limit by guessing across the boundary."""

from __future__ import annotations

import pytest

from server.identity.signin import WINDOW_S, sliding_count

LIMIT = 5


def test_attempts_just_before_the_boundary_count_just_after_it() -> None:
    assert sliding_count(current=1, previous=LIMIT, elapsed_s=0.5) > LIMIT


def test_the_last_minute_fades_as_this_one_goes_on() -> None:
    assert sliding_count(current=1, previous=LIMIT, elapsed_s=WINDOW_S * 0.9) == pytest.approx(1 + LIMIT * 0.1)
    assert sliding_count(current=LIMIT, previous=0, elapsed_s=1) == LIMIT
