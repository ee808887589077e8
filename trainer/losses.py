"""The losses of the trainer as pure tensor functions: PPO for language models (run by ``trainer/ppo.py``), the
reward model's Bradley-Terry loss (run by ``trainer/reward.py``) and DPO's (run by ``trainer/dpo.py``).

PPO, following Ziegler et al. (2019) and InstructGPT (Ouyang et al., 2022), for an answer y = (a_1..a_T) to prompt x,
with the reward model's score normalized on the policy's own samples (``ScoreScale``) so that beta weighs the same
against it every round:

    r_t   = -beta * (log pi(a_t | s_t) - log pi_ref(a_t | s_t))  +  [t = T] * RM(x, y)
    rho_t = pi_theta(a_t | s_t) / pi_old(a_t | s_t)
    L_clip = -E[ min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t) ]

The advantage A_t comes one of two ways (``PPOSettings.advantage``):

- ``group`` (the default; RLOO, Ahmadian et al., 2024, as GRPO does with several samples per prompt): each of the
  k answers to a prompt has the return R = sum_t r_t, and every token of answer i gets A = R_i - mean_{j != i} R_j,
  divided by the standard deviation of A over the batch (on all processes). No critic to learn, and the first token
  gets the whole of the credit.
- ``critic``: a value head V and GAE, delta_t = r_t + gamma V(s_{t+1}) - V(s_t), A_t = sum_k (gamma lambda)^k
  delta_{t+k}, whitened, with the value loss 1/2 E[ max((V - R)^2, (clip(V, V_old +- eps_v) - R)^2) ], R_t = A_t +
  V(s_t), weighted by c_v.

Log-probabilities divide the logits by the sampling temperature: the answers were drawn from softmax(z / T), and the
probability ratio and the KL penalty are about that distribution. The KL reported and gated on is the
non-negative estimator k3 = (pi_ref / pi - 1) - log(pi_ref / pi) (Schulman, "Approximating KL divergence", 2020).

Every tensor is [batch, answer tokens]; ``mask`` marks the answer's real tokens (1) against padding (0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(token) at each position under softmax(logits / temperature), from the logits that predict it ([B, T, V]
    and [B, T])."""
    return torch.log_softmax(logits / temperature, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance over the real tokens: the advantage scale stays the same from batch to batch."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(variance + eps) * mask


def token_rewards(
    scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards (the KL penalty everywhere, the reward model's score on each answer's last token) and the
    per-token KL estimate log pi - log pi_ref."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = mask.sum(dim=1).long().clamp(min=1) - 1
    rewards[torch.arange(len(scores), device=scores.device), last] += scores
    return rewards * mask, kl


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per answer, the summed per-token estimate k3 of KL(pi || pi_ref) from tokens sampled under pi: unbiased and,
    unlike the plain log-ratio, never negative."""
    log_ratio = (ref_logprobs - logprobs) * mask
    return ((torch.exp(log_ratio) - 1 - log_ratio) * mask).sum(dim=1)


def leave_one_out(returns: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Per answer, its return less the mean return of the other answers to the same prompt (``groups`` numbers the
    prompts): RLOO's baseline, which the answer's own return does not bias. An answer alone with its prompt is
    measured against the batch's mean instead."""
    count = torch.zeros_like(returns).index_add_(0, groups, torch.ones_like(returns))[groups]
    total = torch.zeros_like(returns).index_add_(0, groups, returns)[groups]
    others = torch.where(count > 1, (total - returns) / (count - 1).clamp(min=1), returns.mean())
    return returns - others


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimates and returns; the value after an answer's last token is 0."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    steps = rewards.shape[1]
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


@dataclass
class PolicyLoss:
    loss: torch.Tensor
    clip_fraction: torch.Tensor
    approx_kl: torch.Tensor
    """An estimate of KL(pi_old || pi_theta), for early stopping: E[(rho - 1) - log rho]."""


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float
) -> PolicyLoss:
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    return PolicyLoss(
        loss=masked_mean(torch.maximum(unclipped, clipped), mask),
        clip_fraction=masked_mean((clipped > unclipped).float(), mask),
        approx_kl=masked_mean((ratio - 1) - log_ratio, mask),
    )


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> torch.Tensor:
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the policy's next-token distributions over the answer: tracked, not optimized."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return masked_mean(-(log_p.exp() * log_p).sum(dim=-1), mask)


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, weights: torch.Tensor, total_weight: float | None = None
) -> torch.Tensor:
    """The reward model's loss, -w * log sigmoid(r_chosen - r_rejected), weighted by each pair's rule weight.

    ``total_weight`` is the weight of the whole batch when these pairs are only one process's share of it: the
    shares' losses then add up to the batch's loss.
    """
    total = weights.sum() if total_weight is None else total_weight
    return (weights * -torch.nn.functional.logsigmoid(chosen - rejected)).sum() / total


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Direct Preference Optimization (Rafailov et al., 2023), per pair, from the answers' summed log-probabilities
    under the policy and the reference:

        -log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )
    """
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return -torch.nn.functional.logsigmoid(beta * margin)
