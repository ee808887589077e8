"""The gate a new policy passes before it is offered: better than its parent, not too far from the base, sane.

Evaluation samples answers to held-out prompts (with a fixed seed) from the parent, before training, and from the
candidate, after; the verdict is a pure function of the two measurements. Under ``accelerate launch`` each process
answers its share of the prompts and the measurements are gathered, so every process reaches the same verdict.

The reward test is paired and allows for noise. With ``d_i`` the candidate's reward minus the parent's on prompt
``i`` of ``n``, ``mean(d)`` the gain and ``se = std(d) / sqrt(n)`` its standard error, the candidate passes when

    mean(d) > min_reward_gain - reward_tolerance_se * se

A shortfall within the evaluation's own noise is no evidence that the candidate is worse. Requiring a strict gain
on a handful of sampled answers rejected most rounds of a sparse preference (a list in one answer of ten) by
margins far inside that noise, and each rejection threw the round's training away (docs/benchmarks.md, "Closed loop").
A canary's live test (server/versions/autopilot.py) still rolls back a version that users find worse.
"""

from __future__ import annotations

import statistics

import torch
from pydantic import BaseModel, computed_field

from core.config import GateSettings
from trainer.distributed import gather_real, process_seed, process_share
from trainer.ppo import PPOTrainer


class PolicyEval(BaseModel):
    rewards: list[float]
    """The reward model's score of each answer, in the order of the prompts."""
    kl_to_base: float
    """Mean over answers of the summed per-token log-ratio to the base model (nats)."""
    mean_length: float
    """Answer tokens."""
    repetition: float
    """Mean share of an answer's word 3-grams that repeat an earlier one."""

    @computed_field
    @property
    def mean_reward(self) -> float:
        return statistics.fmean(self.rewards)


class GateResult(BaseModel):
    passed: bool
    reasons: list[str]
    parent: PolicyEval
    candidate: PolicyEval


def repetition(text: str, n: int = 3) -> float:
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def evaluate_policy(trainer: PPOTrainer, prompts: list[list[dict]], seed: int, desc: str = "gate") -> PolicyEval:
    torch.manual_seed(process_seed(seed))
    share = process_share(prompts)
    rollout = trainer.rollout(share.items, desc)
    repetitions = torch.tensor([repetition(a) for a in rollout.answers], dtype=torch.float64)
    columns = [rollout.scores, trainer.kl_to_base(rollout), rollout.mask.sum(dim=1), repetitions]
    per_answer = torch.stack([column.double().to(trainer.device) for column in columns], dim=1)
    gathered = gather_real(per_answer, share)
    _, kl_to_base, mean_length, mean_repetition = gathered.mean(dim=0).tolist()
    return PolicyEval(
        rewards=gathered[:, 0].tolist(), kl_to_base=kl_to_base, mean_length=mean_length, repetition=mean_repetition
    )


def reward_gain(parent: PolicyEval, candidate: PolicyEval) -> tuple[float, float]:
    """The mean per-prompt gain of the candidate's reward over the parent's, and its standard error (0 with a
    single prompt)."""
    gains = [c - p for p, c in zip(parent.rewards, candidate.rewards, strict=True)]
    se = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else 0.0
    return statistics.fmean(gains), se


def judge(parent: PolicyEval, candidate: PolicyEval, settings: GateSettings) -> GateResult:
    reasons = []
    gain, se = reward_gain(parent, candidate)
    threshold = settings.min_reward_gain - settings.reward_tolerance_se * se
    if gain <= threshold:
        reasons.append(
            f"mean reward {candidate.mean_reward:.3f} against the parent's {parent.mean_reward:.3f}: the gain "
            f"{gain:.3f} (standard error {se:.3f}) does not exceed {threshold:.3f}"
        )
    if candidate.kl_to_base > settings.kl_budget:
        reasons.append(f"KL to the base {candidate.kl_to_base:.2f} exceeds the budget {settings.kl_budget}")
    low, high = parent.mean_length * (1 - settings.length_band), parent.mean_length * (1 + settings.length_band)
    if not low <= candidate.mean_length <= high:
        reasons.append(f"mean length {candidate.mean_length:.1f} tokens is outside [{low:.1f}, {high:.1f}]")
    if candidate.repetition > settings.max_repetition:
        reasons.append(f"repetition {candidate.repetition:.2f} exceeds {settings.max_repetition}")
    return GateResult(passed=not reasons, reasons=reasons, parent=parent, candidate=candidate)
