"""What a rollout request may ask of the engine is checked before anything is loaded or sampled."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.config import Settings
from core.errors import InvalidInput
from server.rollouts_api.protocol import RolloutRequest
from server.rollouts_api.serving import RolloutService


@pytest.mark.parametrize("name", ["../v1/adapter", "v1/adapter", "/etc", "..", "", "a" * 65, "x y"])
def test_an_adapter_is_named_never_a_path(name: str) -> None:
    with pytest.raises(ValidationError):
        RolloutRequest(adapter=name, prompts=[[1]], max_tokens=4)


def test_empty_prompts_and_negative_token_ids_are_refused() -> None:
    for prompts in ([], [[]], [[-1]]):
        with pytest.raises(ValidationError):
            RolloutRequest(adapter="a", prompts=prompts, max_tokens=4)


def test_a_request_fits_half_the_engines_batch_its_context_and_vocabulary() -> None:
    settings = Settings(_env_file=None, max_num_seqs=16, max_model_len=64)
    service = RolloutService(None, None, settings, vocab_size=100)
    service._check(RolloutRequest(adapter="a", prompts=[[99] * 60] * 4, n=2, max_tokens=4))
    with pytest.raises(InvalidInput, match="at most 8"):
        service._check(RolloutRequest(adapter="a", prompts=[[1]] * 3, n=3, max_tokens=4))
    with pytest.raises(InvalidInput, match="context holds 64"):
        service._check(RolloutRequest(adapter="a", prompts=[[1] * 61], max_tokens=4))
    with pytest.raises(InvalidInput, match="vocabulary"):
        service._check(RolloutRequest(adapter="a", prompts=[[1], [100]], max_tokens=4))


def test_seeds_stay_within_what_the_engine_takes() -> None:
    for seed in (-1, 2**32):
        with pytest.raises(ValidationError):
            RolloutRequest(adapter="a", prompts=[[1]], max_tokens=4, seed=seed)
