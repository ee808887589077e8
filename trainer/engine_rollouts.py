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

import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx
from peft import PeftModel
from pydantic import BaseModel, Field, ValidationError

from trainer.sampling import Sampling

ROLLOUTS_PATH = "/v1/admin/rollouts"
TIMEOUT_S = 600.0
"""A batch of a rollout on a busy CPU engine takes a minute or two; a server that takes longer is of no help."""


class EngineUnavailable(Exception):
    """The server could not be reached or refused the rollout: the trainer samples itself."""


class EngineAnswer(BaseModel):
    token_ids: list[int] = Field(min_length=1)
    ended: bool


class EngineAnswers(BaseModel):
    answers: list[EngineAnswer]


class EngineSampler:
    def __init__(self, url: str, admin_key: str, trainees: Path, max_answers: int):
        self.url = url.rstrip("/") + ROLLOUTS_PATH
        self.headers = {"Authorization": f"Bearer {admin_key}"}
        self.trainees = trainees
        self.max_answers = max_answers
        """Answers per request: the server's ``Settings.max_rollout_answers``."""

    def sample(
        self, policy: PeftModel, prompts: Sequence[list[int]], sampling: Sampling, seed: int
    ) -> list[EngineAnswer]:
        """One answer to each prompt (token ids), sampled with the policy's adapter as it is now."""
        name = uuid.uuid4().hex
        try:
            policy.save_pretrained(self.trainees / name)
            answers = []
            for start in range(0, len(prompts), self.max_answers):
                chunk = prompts[start : start + self.max_answers]
                answers += self._request(name, chunk, sampling, seed + start)
            return answers
        except OSError as exc:
            raise EngineUnavailable(f"the adapter could not be saved for the server: {exc}") from exc
        finally:
            shutil.rmtree(self.trainees / name, ignore_errors=True)

    def _request(self, name: str, prompts: Sequence[list[int]], sampling: Sampling, seed: int) -> list[EngineAnswer]:
        """Asked again once when the active version changed meanwhile (a swap makes the answers stale)."""
        body = {
            "adapter": name,
            "prompts": [list(prompt) for prompt in prompts],
            "temperature": sampling.temperature,
            "max_tokens": sampling.max_new_tokens,
            "seed": seed,
        }
        for _ in range(2):
            try:
                response = httpx.post(self.url, json=body, headers=self.headers, timeout=TIMEOUT_S)
            except httpx.HTTPError as exc:
                raise EngineUnavailable(f"no answer from {self.url}: {exc!r}") from exc
            if response.status_code != httpx.codes.CONFLICT:
                break
        if response.status_code != httpx.codes.OK:
            raise EngineUnavailable(f"{self.url} answered {response.status_code}: {response.text[:300]}")
        try:
            answers = EngineAnswers.model_validate_json(response.content).answers
        except ValidationError as exc:
            raise EngineUnavailable(f"{self.url} answered with a body that is not a rollout: {exc}") from exc
        if len(answers) != len(prompts):
            raise EngineUnavailable(f"{self.url} answered {len(answers)} answers to {len(prompts)} prompts")
        return answers
