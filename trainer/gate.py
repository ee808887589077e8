"""The gate a new policy passes before it is offered: better than its parent, not too far from the base, sane.

Evaluation samples answers to held-out prompts (with a fixed seed) from the parent, before training, and from the
candidate, after; the verdict is a pure function of the two measurements. Under ``accelerate launch`` each process
answers its share of the prompts and the measurements are gathered, so every process reaches the same verdict.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel

from core.config import GateSettings
from trainer.distributed import gather_real, process_seed, process_share
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
    torch.manual_seed(process_seed(seed))
    share = process_share(prompts)
    rollout = trainer.rollout(share.items)
    repetitions = torch.tensor([repetition(a) for a in rollout.answers], dtype=torch.float64)
    columns = [rollout.scores, trainer.kl_to_base(rollout), rollout.mask.sum(dim=1), repetitions]
    per_answer = torch.stack([column.double().to(trainer.device) for column in columns], dim=1)
    mean_reward, kl_to_base, mean_length, mean_repetition = gather_real(per_answer, share).mean(dim=0).tolist()
    return PolicyEval(
        mean_reward=mean_reward, kl_to_base=kl_to_base, mean_length=mean_length, repetition=mean_repetition
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
