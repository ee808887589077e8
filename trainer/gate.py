"""The gate a new policy passes before it is offered: better than its parent, not too far from the base, sane.

Evaluation samples answers to held-out prompts (with a fixed seed) from the parent, before training, and from the
candidate, after; the verdict is a pure function of the two measurements.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel

from core.config import GateSettings
from trainer.ppo import PPOTrainer


class PolicyEval(BaseModel):
    mean_reward: float
    kl_to_base: float
    """Mean over answers of the summed per-token log-ratio to the base model (nats)."""
    mean_length: float
    """Answer tokens."""
    repetition: float
    """Mean share of an answer's word 3-grams that repeat an earlier one."""


class GateResult(BaseModel):
    passed: bool
    reasons: list[str]
    parent: PolicyEval
    candidate: PolicyEval


def repetition(text: str, n: int = 3) -> float:
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def evaluate_policy(trainer: PPOTrainer, prompts: list[list[dict]], seed: int) -> PolicyEval:
    torch.manual_seed(seed)
    rollout = trainer.rollout(prompts)
    return PolicyEval(
        mean_reward=rollout.scores.mean().item(),
        kl_to_base=trainer.kl_to_base(rollout).mean().item(),
        mean_length=rollout.mask.sum(dim=1).mean().item(),
        repetition=sum(repetition(a) for a in rollout.answers) / len(rollout.answers),
    )


def judge(parent: PolicyEval, candidate: PolicyEval, settings: GateSettings) -> GateResult:
    reasons = []
    if candidate.mean_reward <= parent.mean_reward + settings.min_reward_gain:
        reasons.append(
            f"mean reward {candidate.mean_reward:.3f} does not beat the parent's {parent.mean_reward:.3f} "
            f"by more than {settings.min_reward_gain}"
        )
    if candidate.kl_to_base > settings.kl_budget:
        reasons.append(f"KL to the base {candidate.kl_to_base:.2f} exceeds the budget {settings.kl_budget}")
    low, high = parent.mean_length * (1 - settings.length_band), parent.mean_length * (1 + settings.length_band)
    if not low <= candidate.mean_length <= high:
        reasons.append(f"mean length {candidate.mean_length:.1f} tokens is outside [{low:.1f}, {high:.1f}]")
    if candidate.repetition > settings.max_repetition:
        reasons.append(f"repetition {candidate.repetition:.2f} exceeds {settings.max_repetition}")
    return GateResult(passed=not reasons, reasons=reasons, parent=parent, candidate=candidate)
