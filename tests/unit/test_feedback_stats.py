"""Wilson intervals and per-version rates."""

from __future__ import annotations

import pytest

from feedback.stats import version_stats, wilson_interval


def test_wilson_interval_known_value() -> None:
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0 < high < 0.2
    low, high = wilson_interval(20, 20)
    assert 0.8 < low < 1 and high == 1.0


def test_interval_narrows_with_more_trials() -> None:
    small = wilson_interval(5, 10)
    large = wilson_interval(500, 1000)
    assert large[1] - large[0] < small[1] - small[0]


def test_version_stats_rates() -> None:
    stats = version_stats("v1", {"served": 10, "up": 3, "down": 1, "regenerations": 2, "wins": 1, "losses": 3})
    assert stats.thumbs_up.rate == 0.3 and stats.thumbs_down.rate == 0.1
    assert stats.regenerated.trials == 10 and stats.comparisons_won.rate == 0.25
    assert version_stats("v2", dict.fromkeys(stats.counts, 0)).thumbs_up.rate is None
