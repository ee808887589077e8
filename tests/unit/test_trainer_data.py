"""Which pairs a round learns from: the new ones always, earlier ones as a sample, never one twice, and no principal
over its share; which prompts no round trains on; and how a round samples answers."""

from __future__ import annotations

from collections import Counter

import pytest

from core.config import PPOSettings
from tests.factories import short_over_long_pair
from trainer.chat_text import Prompt
from trainer.data import capped, is_held_out, round_pairs, split_held_out
from trainer.sampling import MAX_TEMPERATURE, MIN_TEMPERATURE, Sampling, Served


def ids(pairs: list) -> list[str]:
    return [pair.pair_id for pair in pairs]


def test_a_short_stream_is_taken_whole_with_the_new_pairs_first() -> None:
    every = [short_over_long_pair(i) for i in range(10)]
    new = every[7:]
    chosen = round_pairs(new, every, limit=128, seed=0, max_share=0.1)
    assert ids(chosen[:3]) == ids(new)
    assert sorted(ids(chosen)) == sorted(ids(every))


def test_a_long_stream_is_sampled_to_the_limit_around_every_new_pair() -> None:
    every = [short_over_long_pair(i) for i in range(500)]
    new = every[-20:]
    chosen = round_pairs(new, every, limit=64, seed=0, max_share=0.1)
    assert len(chosen) == 64 and len(set(ids(chosen))) == 64
    assert ids(chosen[:20]) == ids(new)
    assert set(ids(chosen[20:])) <= set(ids(every[:-20]))


def test_more_new_pairs_than_the_limit_keeps_the_first_of_them() -> None:
    every = [short_over_long_pair(i) for i in range(50)]
    assert ids(round_pairs(every, every, limit=16, seed=0, max_share=0.1)) == ids(every[:16])


def test_the_sample_of_earlier_pairs_changes_as_the_stream_grows() -> None:
    every = [short_over_long_pair(i) for i in range(300)]
    first = round_pairs(every[200:210], every[:210], limit=40, seed=0, max_share=0.1)
    second = round_pairs(every[210:220], every[:220], limit=40, seed=0, max_share=0.1)
    assert set(ids(first[10:])) != set(ids(second[10:])), "every round would see the same earlier pairs"
    assert round_pairs(every[200:210], every[:210], limit=40, seed=0, max_share=0.1) == first, (
        "a round must be reproducible"
    )


def taught_by(principals: list[str]) -> list:
    return [short_over_long_pair(i).model_copy(update={"principal_id": p}) for i, p in enumerate(principals)]


def test_no_principal_has_more_than_its_share_of_a_round() -> None:
    """A busy key cannot decide what a round teaches: with ten principals or more, none has over a tenth."""
    ordered = taught_by(["busy"] * 200 + [f"user-{i}" for i in range(9) for _ in range(3)])
    chosen = capped(ordered, limit=128, max_share=0.1)
    counts = Counter(pair.principal_id for pair in chosen)
    assert counts["busy"] <= 0.1 * len(chosen) and len(chosen) == 30
    assert set(counts) == {"busy", *(f"user-{i}" for i in range(9))}


def test_the_cap_keeps_the_order_and_fills_the_round_when_it_can() -> None:
    ordered = taught_by([f"user-{i % 20}" for i in range(100)])
    assert capped(ordered, limit=40, max_share=0.1) == ordered[:40]


def test_below_ten_principals_nothing_is_capped() -> None:
    """A share of a tenth cannot hold among fewer than ten: a small deployment's few teachers all count."""
    ordered = taught_by(["app"] * 90 + ["alice"] * 5)
    assert capped(ordered, limit=128, max_share=0.1) == ordered


def test_a_prompt_is_held_out_by_its_text_whoever_asks_and_in_every_round() -> None:
    pairs = [short_over_long_pair(i) for i in range(400)]
    train, held = split_held_out(pairs, 0.2)
    assert 0.14 < len(held) / len(pairs) < 0.26
    asked_again = [
        pair.model_copy(update={"pair_id": f"again-{pair.pair_id}", "conversation_id": "another", "user_id": "v"})
        for pair in pairs
    ]
    _, held_again = split_held_out(asked_again, 0.2)
    assert [p.prompt for p in held_again] == [p.prompt for p in held], "the same prompts, whoever asked them"
    assert not set(ids(train)) & set(ids(held))
    assert is_held_out(Prompt.of_pair(held[0]), 0.2)
    assert split_held_out(pairs, 0.0) == (pairs, [])


def test_a_round_samples_as_recent_answers_were_served() -> None:
    served = [Served(0.7, 96), Served(0.7, 96), Served(None, 2000), Served(0.2, 40)]
    # The median of 0.2, 0.7, 0.7 and the server's 1.0; of the token limits, capped.
    assert Sampling.of(PPOSettings(), served) == Sampling(temperature=0.7, max_new_tokens=96)
    assert Sampling.of(PPOSettings(token_cap=64), served).max_new_tokens == 64
    fixed = PPOSettings(temperature=1.2, max_new_tokens=30)
    assert Sampling.of(fixed, served) == Sampling(temperature=1.2, max_new_tokens=30)
    assert Sampling.of(PPOSettings()) == Sampling(temperature=1.0, max_new_tokens=PPOSettings().token_cap)
    greedy = Sampling.of(PPOSettings(), [Served(0.0, 50)])
    assert greedy.temperature == pytest.approx(MIN_TEMPERATURE), "greedy users still get PPO samples that differ"
    steered = Sampling.of(PPOSettings(), [Served(2.0, 96)] * 9 + [Served(0.7, 96)])
    assert steered.temperature == MAX_TEMPERATURE, "a flood of answers at 2.0 does not make every rollout noise"
    tokens_fixed = Sampling.of(PPOSettings(max_new_tokens=30), [Served(2.0, 96)] * 3)
    assert tokens_fixed.temperature == MAX_TEMPERATURE, "fixing the token limit does not lift the temperature's bounds"
