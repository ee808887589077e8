"""Which pairs a round learns from: the new ones always, earlier ones as a sample, never one twice."""

from __future__ import annotations

from tests.factories import short_over_long_pair
from trainer.data import round_pairs


def ids(pairs: list) -> list[str]:
    return [pair.pair_id for pair in pairs]


def test_a_short_stream_is_taken_whole_with_the_new_pairs_first() -> None:
    every = [short_over_long_pair(i) for i in range(10)]
    new = every[7:]
    chosen = round_pairs(new, every, limit=128, seed=0)
    assert ids(chosen[:3]) == ids(new)
    assert sorted(ids(chosen)) == sorted(ids(every))


def test_a_long_stream_is_sampled_to_the_limit_around_every_new_pair() -> None:
    every = [short_over_long_pair(i) for i in range(500)]
    new = every[-20:]
    chosen = round_pairs(new, every, limit=64, seed=0)
    assert len(chosen) == 64 and len(set(ids(chosen))) == 64
    assert ids(chosen[:20]) == ids(new)
    assert set(ids(chosen[20:])) <= set(ids(every[:-20]))


def test_more_new_pairs_than_the_limit_keeps_the_first_of_them() -> None:
    every = [short_over_long_pair(i) for i in range(50)]
    assert ids(round_pairs(every, every, limit=16, seed=0)) == ids(every[:16])


def test_the_sample_of_earlier_pairs_changes_as_the_stream_grows() -> None:
    every = [short_over_long_pair(i) for i in range(300)]
    first = round_pairs(every[200:210], every[:210], limit=40, seed=0)
    second = round_pairs(every[210:220], every[:220], limit=40, seed=0)
    assert set(ids(first[10:])) != set(ids(second[10:])), "every round would see the same earlier pairs"
    assert round_pairs(every[200:210], every[:210], limit=40, seed=0) == first, "a round must be reproducible"
