"""Rollouts for a trainer, sampled by the serving engine with the trainer's adapter in the making.

PPO samples answers from the policy it is training, several times a round. Where the engine has a GPU it samples
them far faster than the trainer's own ``generate``, which is why OpenRLHF and TRL generate with vLLM; on the CPU
backend it is slower (docs/benchmarks.md, "Rollouts from the serving engine"), so a trainer asks only when told to.
The adapter is served as its difference to the active version, as canaries are (``server/versions/weights.py``),
loaded for the one request and unloaded after. The answers share the engine with users' requests; the size of a
request is bounded by the engine's batch (``max_num_seqs``) and its context, checked before anything is loaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from vllm import SamplingParams
from vllm.exceptions import VLLMClientError
from vllm.inputs.engine import tokens_input
from vllm.lora.request import LoRARequest
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM

from core.config import Settings
from core.errors import Conflict, InvalidInput, NotFound
from core.policy import TRAINEES_DIRNAME
from server.rollouts_api.protocol import RolloutAnswer, RolloutRequest, RolloutResponse
from server.versions.loaded import LoadedVersions
from server.versions.weights import ADAPTER_CONFIG, BrokenVersion

log = logging.getLogger(__name__)


class RolloutService:
    def __init__(self, engine: AsyncLLM, loaded: LoadedVersions, settings: Settings, vocab_size: int):
        self.engine = engine
        self.loaded = loaded
        self.settings = settings
        self.vocab_size = vocab_size

    def _check(self, request: RolloutRequest) -> None:
        sequences = len(request.prompts) * request.n
        if sequences > self.settings.max_rollout_answers:
            raise InvalidInput(
                f"{sequences} answers asked for; at most {self.settings.max_rollout_answers} (half the engine's batch: "
                "users keep the rest) a request.",
                param="prompts",
            )
        if max(max(prompt) for prompt in request.prompts) >= self.vocab_size:
            raise InvalidInput(f"A token id is out of the vocabulary ({self.vocab_size} tokens).", param="prompts")
        longest = max(len(prompt) for prompt in request.prompts) + request.max_tokens
        if longest > self.settings.max_model_len:
            raise InvalidInput(
                f"A prompt and its answer take up to {longest} tokens; the context holds "
                f"{self.settings.max_model_len}.",
                param="max_tokens",
            )

    async def rollout(self, request: RolloutRequest) -> RolloutResponse:
        self._check(request)
        folder = self.settings.versions_dir / TRAINEES_DIRNAME / request.adapter
        if not (folder / ADAPTER_CONFIG).is_file():
            raise NotFound(f"No adapter '{request.adapter}' among the trainees.", code="adapter_not_found")
        started = time.perf_counter()
        try:
            async with self.loaded.trainee(folder) as (swaps, lora):
                rows = await self._all_answers(request, lora)
        except BrokenVersion as exc:
            raise InvalidInput(str(exc), param="adapter") from exc
        if self.loaded.swaps != swaps:
            raise Conflict("The active version changed during the rollout; ask again.", code="active_version_changed")
        answers = [answer for row in rows for answer in row]
        tokens = sum(len(answer.token_ids) for answer in answers)
        seconds = time.perf_counter() - started
        log.info("rollout", extra={"answers": len(answers), "tokens": tokens, "seconds": round(seconds, 2)})
        return RolloutResponse(active_version=self.loaded.active, answers=answers)

    async def _all_answers(self, request: RolloutRequest, lora: LoRARequest) -> list[list[RolloutAnswer]]:
        """Every prompt's answers; the first refusal cancels the rest (the engine aborts them) before the adapter
        they use is unloaded: a request still running on a removed adapter would bring the engine down."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._answers(p, i, request, lora)) for i, p in enumerate(request.prompts)]
        except* InvalidInput as refused:
            raise refused.exceptions[0] from None
        return [task.result() for task in tasks]

    async def _answers(
        self, prompt: list[int], index: int, request: RolloutRequest, lora: LoRARequest
    ) -> list[RolloutAnswer]:
        params = SamplingParams(
            n=request.n,
            temperature=request.temperature,
            top_p=1.0,
            max_tokens=request.max_tokens,
            seed=None if request.seed is None else request.seed + index * request.n,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final = None
        try:
            async for output in self.engine.generate(
                tokens_input(prompt), params, f"rollout-{uuid.uuid4().hex}", lora_request=lora
            ):
                final = output
        except (VLLMClientError, ValueError) as exc:
            raise InvalidInput(f"The engine refused prompt {index}: {exc}", param="prompts") from exc
        assert final is not None, "a finished request has a final output"
        return [
            RolloutAnswer(token_ids=list(out.token_ids), ended=out.finish_reason == "stop")
            for out in sorted(final.outputs, key=lambda out: out.index)
        ]
