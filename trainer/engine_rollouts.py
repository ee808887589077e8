"""PPO's rollouts sampled by the serving engine, with the adapter being trained (``server/rollouts_api/``).

A round samples hundreds of answers from the policy it trains: PPO's rollouts, best-of-n, the gate. A serving engine
on a GPU samples them far faster than ``generate`` in the trainer's process, which is why OpenRLHF and TRL sample
with vLLM; on the CPU backend the trainer's own are faster (docs/benchmarks.md, "Rollouts from the serving engine"),
so this is a setting (``PPO__ENGINE_ROLLOUTS``). The trainer saves its adapter where the server reads it, sends the
prompts' token ids with the admin key, and gets the answers' token ids back; it computes every log-probability
itself, so the engine's numerics never enter the loss. When no server answers, the trainer samples itself for the
rest of the round.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx
from peft import PeftModel
from pydantic import BaseModel

from trainer.sampling import Sampling

log = logging.getLogger(__name__)

ROLLOUTS_PATH = "/v1/admin/rollouts"
TIMEOUT_S = 600.0
"""A batch of a rollout on a busy CPU engine takes a minute or two; a server that takes longer is of no help."""


class EngineUnavailable(Exception):
    """The server could not be reached or refused the rollout: the trainer samples itself."""


class EngineAnswer(BaseModel):
    token_ids: list[int]
    ended: bool


class EngineSampler:
    def __init__(self, url: str, admin_key: str, trainees: Path):
        self.url = url.rstrip("/") + ROLLOUTS_PATH
        self.headers = {"Authorization": f"Bearer {admin_key}"}
        self.trainees = trainees

    def sample(
        self, policy: PeftModel, prompts: Sequence[list[int]], sampling: Sampling, seed: int
    ) -> list[EngineAnswer]:
        """One answer to each prompt (token ids), sampled with the policy's adapter as it is now."""
        name = uuid.uuid4().hex
        policy.save_pretrained(self.trainees / name)
        body = {
            "adapter": name,
            "prompts": [list(prompt) for prompt in prompts],
            "temperature": sampling.temperature,
            "max_tokens": sampling.max_new_tokens,
            "seed": seed,
        }
        try:
            response = httpx.post(self.url, json=body, headers=self.headers, timeout=TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"no answer from {self.url}: {exc!r}") from exc
        finally:
            shutil.rmtree(self.trainees / name, ignore_errors=True)
        if response.status_code != 200:
            raise EngineUnavailable(f"{self.url} answered {response.status_code}: {response.text[:300]}")
        return [EngineAnswer.model_validate(answer) for answer in response.json()["answers"]]
