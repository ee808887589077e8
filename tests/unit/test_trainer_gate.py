"""The gate's verdict and the repetition measure."""

from __future__ import annotations

from core.config import GateSettings
from trainer.gate import PolicyEval, judge, repetition

PARENT = PolicyEval(mean_reward=0.0, kl_to_base=0.0, mean_length=50.0, repetition=0.05)


def candidate(**change: float) -> PolicyEval:
    return PARENT.model_copy(update={"mean_reward": 0.5, "kl_to_base": 2.0, **change})


def test_a_better_close_sane_policy_passes() -> None:
    result = judge(PARENT, candidate(), GateSettings())
    assert result.passed and result.reasons == []


def test_each_failure_has_its_reason() -> None:
    settings = GateSettings(min_reward_gain=0.1, kl_budget=5.0, length_band=0.5, max_repetition=0.4)
    cases = {
        "mean reward": candidate(mean_reward=0.05),
        "KL to the base": candidate(kl_to_base=6.0),
        "mean length": candidate(mean_length=80.0),
        "repetition": candidate(repetition=0.6),
    }
    for word, policy in cases.items():
        result = judge(PARENT, policy, settings)
        assert not result.passed and len(result.reasons) == 1 and word in result.reasons[0]


def test_worse_policy_is_rejected() -> None:
    assert not judge(PARENT, candidate(mean_reward=-1.0), GateSettings()).passed


def test_repetition() -> None:
    assert repetition("the cat sat on the mat") == 0.0
    assert repetition("go go go go go go") == 1 - 1 / 4
    assert repetition("short") == 0.0
