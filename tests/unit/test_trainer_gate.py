"""The gate's verdict, its paired reward test, and the repetition measure."""

from __future__ import annotations

import pytest

from core.config import GateSettings
from trainer.gate import Evidence, PairEval, PolicyEval, judge, repetition, reward_gain

PARENT_REWARDS = [0.0, 1.0, -1.0, 0.5]
PARENT = PolicyEval(rewards=PARENT_REWARDS, kl_to_base=0.0, mean_length=50.0, repetition=0.05)


def candidate(gains: list[float] | None = None, **change: float) -> PolicyEval:
    """The parent's answers, each scored ``gains`` higher (0.5 each by default), at KL 2."""
    rewards = [r + g for r, g in zip(PARENT_REWARDS, gains or [0.5] * len(PARENT_REWARDS), strict=True)]
    return PARENT.model_copy(update={"rewards": rewards, "kl_to_base": 2.0, **change})


def test_a_better_close_sane_policy_passes() -> None:
    result = judge(PARENT, candidate(), GateSettings())
    assert result.passed and result.reasons == []


def test_each_failure_has_its_reason() -> None:
    settings = GateSettings(
        min_reward_gain=0.6, kl_budget=5.0, kl_round_budget=1.5, max_length_growth=0.5, max_repetition=0.4
    )
    cases = {
        "mean reward": candidate(),
        "KL to the base": candidate([0.7] * 4, kl_to_base=6.0),
        "KL to the parent": candidate([0.7] * 4, kl_to_parent=1.6),
        "mean length": candidate([0.7] * 4, mean_length=80.0),
        "repetition": candidate([0.7] * 4, repetition=0.6),
    }
    for word, policy in cases.items():
        result = judge(PARENT, policy, settings)
        assert not result.passed and len(result.reasons) == 1 and word in result.reasons[0], (word, result.reasons)


def test_the_length_band_allows_more_shortening_than_growth() -> None:
    # The parent answers in 40 tokens: a round may cut that to 10 but lengthen it only to 60.
    parent = PARENT.model_copy(update={"mean_length": 40.0})
    verdicts = {
        length: judge(parent, candidate(mean_length=length), GateSettings()).passed for length in (9, 10, 60, 61)
    }
    assert verdicts == {9: False, 10: True, 60: True, 61: False}


def test_reward_gain_is_paired_by_prompt() -> None:
    # Prompt-level differences between the parent's rewards do not enter the gain's noise.
    gain, se = reward_gain(PARENT, candidate([0.4, 0.6, 0.4, 0.6]))
    assert gain == pytest.approx(0.5)
    assert se == pytest.approx((4 * 0.1**2 / 3) ** 0.5 / 4**0.5)  # sample deviation over the root of n
    one_prompt = PARENT.model_copy(update={"rewards": [1.0]})
    assert reward_gain(one_prompt, one_prompt.model_copy(update={"rewards": [0.0]})) == (-1.0, 0.0)


def test_a_shortfall_within_the_noise_passes_and_a_clear_one_does_not() -> None:
    noisy = candidate([1.0, -1.0, 1.0, -1.2])  # gain -0.05, standard error about 0.58
    assert judge(PARENT, noisy, GateSettings()).passed
    assert not judge(PARENT, noisy, GateSettings(reward_tolerance_se=0.0)).passed
    clearly_worse = candidate([-1.0, -0.9, -1.1, -1.0])  # gain -1.0, standard error about 0.04
    assert not judge(PARENT, clearly_worse, GateSettings()).passed


def test_a_reward_model_no_better_than_chance_on_held_out_pairs_does_not_decide() -> None:
    clearly_worse = candidate([-1.0, -0.9, -1.1, -1.0])
    chance = Evidence(reward_accuracy=0.5, reward_held_out=20)
    result = judge(PARENT, clearly_worse, GateSettings(), chance)
    assert result.passed and not result.reward_test_counted
    too_few_to_tell = Evidence(reward_accuracy=0.4, reward_held_out=5)
    assert not judge(PARENT, clearly_worse, GateSettings(), too_few_to_tell).passed


def pairs_evidence(changes: list[float]) -> Evidence:
    parent = [0.5 * i for i in range(len(changes))]
    return Evidence(
        parent_pairs=PairEval(margins=parent),
        candidate_pairs=PairEval(margins=[p + c for p, c in zip(parent, changes, strict=True)]),
    )


def test_held_out_pairs_the_candidate_ranks_clearly_worse_reject_it() -> None:
    worse = pairs_evidence([-1.0, -1.2, -0.8, -1.1, -0.9, -1.0, -1.05, -0.95])
    result = judge(PARENT, candidate(), GateSettings(), worse)
    assert not result.passed and "held-out pairs" in result.reasons[0]
    assert result.pair_accuracy == 0.0 and result.pair_gain == pytest.approx(-1.0)
    noisy = pairs_evidence([1.0, -1.2, 0.8, -1.1, 0.9, -1.0, 1.05, -0.95])
    assert judge(PARENT, candidate(), GateSettings(), noisy).passed
    better = judge(PARENT, candidate(), GateSettings(), pairs_evidence([0.5] * 8))
    assert better.passed and better.pair_accuracy == 1.0


def test_too_few_held_out_pairs_are_no_test() -> None:
    result = judge(PARENT, candidate(), GateSettings(min_held_out_pairs=8), pairs_evidence([-1.0] * 7))
    assert result.passed and result.pair_gain is None


def test_repetition() -> None:
    assert repetition("the cat sat on the mat") == 0.0
    assert repetition("go go go go go go") == 1 - 1 / 4
    assert repetition("short") == 0.0
