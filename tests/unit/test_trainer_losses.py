"""PPO and Bradley-Terry arithmetic on tiny hand-made tensors."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import (
    bradley_terry_loss,
    dpo_loss,
    gae,
    kl_k3,
    leave_one_out,
    masked_whiten,
    policy_loss,
    token_logprobs,
    token_rewards,
    value_loss,
)


def test_rewards_put_the_score_on_each_answers_last_token() -> None:
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    logprobs = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, -1.0, -5.0]])
    ref = torch.tensor([[-1.5, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    rewards, kl = token_rewards(torch.tensor([2.0, 3.0]), logprobs, ref, mask, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.0, 2.0], [0.0, 3.0, 0.0]]))


def test_kl_is_zero_when_policy_is_the_reference() -> None:
    logprobs = torch.randn(2, 4)
    _, kl = token_rewards(torch.zeros(2), logprobs, logprobs.clone(), torch.ones(2, 4), kl_coef=0.1)
    assert kl.abs().max() == 0


def test_gae_matches_a_hand_computation() -> None:
    rewards = torch.tensor([[0.0, 1.0]])
    values = torch.tensor([[0.5, 0.25]])
    mask = torch.ones(1, 2)
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    delta_1 = 1.0 - 0.25
    delta_0 = 0.0 + 0.9 * 0.25 - 0.5
    assert advantages[0, 1].item() == pytest.approx(delta_1)
    assert advantages[0, 0].item() == pytest.approx(delta_0 + 0.9 * 0.8 * delta_1)
    assert torch.allclose(returns, advantages + values)


def test_gae_ignores_padding() -> None:
    advantages, _ = gae(torch.tensor([[1.0, 9.0]]), torch.tensor([[0.0, 9.0]]), torch.tensor([[1.0, 0.0]]), 1.0, 1.0)
    assert advantages[0, 0].item() == pytest.approx(1.0) and advantages[0, 1].item() == 0


def test_whitening() -> None:
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    white = masked_whiten(torch.tensor([[1.0, 2.0, 3.0, 100.0]]), mask)
    assert white[0, :3].mean().item() == pytest.approx(0, abs=1e-6) and white[0, 3] == 0
    assert (white[0, :3] ** 2).mean().item() == pytest.approx(1, abs=1e-4)


def test_policy_loss_at_ratio_one_and_clipping() -> None:
    mask = torch.ones(1, 2)
    advantages = torch.tensor([[1.0, -1.0]])
    same = policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), advantages, mask, clip=0.2)
    assert same.loss.item() == pytest.approx(0.0) and same.approx_kl.item() == pytest.approx(0.0)
    moved = policy_loss(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2), advantages, mask, clip=0.2)
    assert moved.loss.item() == pytest.approx((-1.2 + 1.0) / 2)  # the ratio e^1 is clipped to 1.2
    assert moved.clip_fraction.item() == pytest.approx(0.5) and moved.approx_kl.item() > 0


def test_value_loss_clips_large_moves() -> None:
    mask = torch.ones(1, 1)
    loss = value_loss(torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), mask, clip=0.5)
    assert loss.item() == pytest.approx(0.5 * max((2.0 - 1.0) ** 2, (0.5 - 1.0) ** 2))


def test_bradley_terry_loss() -> None:
    equal = bradley_terry_loss(torch.zeros(2), torch.zeros(2), torch.ones(2))
    assert equal.item() == pytest.approx(math.log(2))
    right = bradley_terry_loss(torch.tensor([3.0]), torch.tensor([0.0]), torch.ones(1))
    wrong = bradley_terry_loss(torch.tensor([0.0]), torch.tensor([3.0]), torch.ones(1))
    assert right < equal < wrong
    weighted = bradley_terry_loss(torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0]), torch.tensor([1.0, 0.0]))
    assert weighted.item() == pytest.approx(right.item())


def test_dpo_loss() -> None:
    chosen, rejected = torch.tensor([-5.0, -9.0]), torch.tensor([-7.0, -3.0])
    at_reference = dpo_loss(chosen, rejected, chosen.clone(), rejected.clone(), beta=0.1)
    assert torch.allclose(at_reference, torch.full((2,), math.log(2)))
    reference = torch.tensor([-5.0, -5.0]), torch.tensor([-7.0, -7.0])
    loss = dpo_loss(torch.tensor([-4.0, -6.0]), torch.tensor([-8.0, -6.0]), *reference, beta=0.5)
    # log-ratio margins: (+1) - (-1) = 2 and (-1) - (+1) = -2, times beta
    assert torch.allclose(loss, -torch.nn.functional.logsigmoid(torch.tensor([1.0, -1.0])))


def test_log_probabilities_are_those_of_the_distribution_sampled_at_the_temperature() -> None:
    logits = torch.tensor([[[2.0, 0.0, -1.0]]])
    tokens = torch.tensor([[1]])
    # At temperature 0.5 the sampler draws from softmax(logits / 0.5): exp(0) / (exp(4) + exp(0) + exp(-2)).
    expected = math.log(1 / (math.exp(4) + 1 + math.exp(-2)))
    assert token_logprobs(logits, tokens, temperature=0.5).item() == pytest.approx(expected)
    assert token_logprobs(logits, tokens).item() == pytest.approx(math.log(1 / (math.exp(2) + 1 + math.exp(-1))))


def test_k3_is_never_negative_where_the_plain_log_ratio_is() -> None:
    logprobs = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-0.5, -2.5, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert ((logprobs - ref) * mask).sum().item() == pytest.approx(0.0)  # the sampled log-ratios cancel out
    by_hand = sum(math.exp(r) - 1 - r for r in (0.5, -0.5))
    assert kl_k3(logprobs, ref, mask).item() == pytest.approx(by_hand) and by_hand > 0
    assert kl_k3(logprobs, logprobs, mask).item() == 0


def test_each_answer_is_measured_against_the_other_answers_to_its_prompt() -> None:
    returns = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0])
    groups = torch.tensor([0, 0, 0, 1, 1])
    expected = torch.tensor([1 - 2.5, 2 - 2.0, 3 - 1.5, 0.0, 0.0])
    assert torch.allclose(leave_one_out(returns, groups), expected)
    # A prompt's answers that all score the same teach nothing, whatever the score.
    assert leave_one_out(torch.tensor([5.0, 5.0, -3.0, -3.0]), torch.tensor([0, 0, 1, 1])).abs().max() == 0


def test_a_constant_added_to_every_return_changes_no_advantage() -> None:
    returns, groups = torch.tensor([0.3, -1.0, 2.0, 0.5]), torch.tensor([0, 0, 1, 1])
    assert torch.allclose(leave_one_out(returns, groups), leave_one_out(returns + 7.5, groups), atol=1e-5)


def test_a_lone_answer_is_measured_against_the_batch_mean() -> None:
    assert leave_one_out(torch.tensor([1.0, 3.0]), torch.tensor([0, 1])).tolist() == [-1.0, 1.0]
