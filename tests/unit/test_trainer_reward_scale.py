"""The reward model's score scale: fitted on the policy's own answers, blind to the model's arbitrary offset; and
its held-out calibration figures."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.reward import ScoreScale, held_out_figures


def test_normalized_scores_do_not_change_with_a_constant_offset_of_the_reward_model() -> None:
    raw = torch.tensor([0.3, -1.2, 2.5, 0.0, 1.1])
    scaled = ScoreScale.fit(raw.tolist()).apply(raw)
    shifted = raw + 41.0
    assert torch.allclose(ScoreScale.fit(shifted.tolist()).apply(shifted), scaled, atol=1e-5)
    assert scaled.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert scaled.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)


def test_a_reward_model_that_scores_every_answer_alike_is_not_amplified() -> None:
    scale = ScoreScale.fit([3.0, 3.0, 3.0])
    assert scale.deviation == 1.0 and scale.apply(torch.tensor([3.0])).item() == 0.0


def test_held_out_calibration() -> None:
    figures = held_out_figures(torch.tensor([2.0, -1.0, 0.0, 3.0]))
    assert figures.accuracy == 0.5 and figures.margin == pytest.approx(1.0)
    sigmoid = lambda m: 1 / (1 + math.exp(-m))  # noqa: E731
    assert figures.log_loss == pytest.approx(-sum(math.log(sigmoid(m)) for m in (2, -1, 0, 3)) / 4)
    assert figures.brier == pytest.approx(sum((1 - sigmoid(m)) ** 2 for m in (2, -1, 0, 3)) / 4)
    knows_nothing = held_out_figures(torch.zeros(6))
    assert knows_nothing.log_loss == pytest.approx(math.log(2)) and knows_nothing.brier == pytest.approx(0.25)
    assert held_out_figures(torch.tensor([])).accuracy is None
