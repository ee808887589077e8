"""What every API's answer goes through on the engine (chat, responses, completions): the version it is routed to,
its token budget within the context, generation, and the completion record at its end.

Each API checks its own request and builds a ``PreparedAnswer`` with the helpers here, then streams or collects the
engine's outputs in its own shape, calling ``open``, then ``finish`` or ``abort`` from here, so that every answer is
counted, recorded and told of weight swaps alike.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from vllm import SamplingParams
from vllm.exceptions import VLLMClientError
from vllm.inputs.engine import tokens_input
from vllm.outputs import RequestOutput
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.v1.engine.async_llm import AsyncLLM

from core.config import Settings
from core.policy import split_model_name
from feedback.records import WeightChange
from server import metrics
from server.answers.prepared import PreparedAnswer
from server.answers.recording import AnswerRecorder
from server.auth import Caller
from server.chat_api.protocol import SampledRequest
from server.errors import ApiError
from server.versions.manager import Route, VersionManager


def pinned_version(model: str, alias: str) -> str | None:
    """The version named after ``alias@``, or None for the routed alias."""
    name, version = split_model_name(model)
    if name != alias:
        raise ApiError(
            404,
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    return version


@dataclass(frozen=True)
class ApiNames:
    """What an API calls its answers' ids, its prompt and its answers' token limit: a refusal names the parameter
    the caller sent, whichever API translated it (``/v1/responses`` answers through the chat service)."""

    id_prefix: str
    prompt: str
    token_limit: str


CHAT = ApiNames("chatcmpl-", "messages", "max_tokens")
COMPLETIONS = ApiNames("cmpl-", "prompt", "max_tokens")
RESPONSES = ApiNames("resp_", "input", "max_output_tokens")


@dataclass
class Routed:
    """Who asks, and the version that answers them."""

    owner: str
    """The caller's user id (API key and ``user``): the traffic split and feedback ownership go by it."""
    principal_id: str
    route: Route


async def _prepend(first: RequestOutput, rest: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestOutput]:
    yield first
    async for out in rest:
        yield out


class Generation:
    def __init__(self, engine: AsyncLLM, settings: Settings, recorder: AnswerRecorder, versions: VersionManager):
        self.engine = engine
        self.settings = settings
        self.recorder = recorder
        self.versions = versions
        self.tokenizer = engine.get_tokenizer()
        self._in_flight: set[PreparedAnswer] = set()
        versions.loaded.on_swap.append(self._note_swap)

    def _note_swap(self, active: str) -> None:
        for answer in self._in_flight:
            answer.weight_changes.append(WeightChange(after_tokens=answer.acc.completion_tokens, active=active))

    # ---- preparing -----------------------------------------------------------------------------------------

    def route(self, model: str, caller: Caller, user: str | None) -> Routed:
        """The version that answers ``user`` of this caller, for ``model`` (the alias, or a pinned version)."""
        pinned = pinned_version(model, self.settings.model_alias)
        owner = self.versions.ids.user_id(caller.key_id, user)
        route = self.versions.route(pinned, owner, admin=caller.is_admin)
        return Routed(owner, self.versions.ids.principal_id(caller.key_id), route)

    def answer_budget(self, prompt_tokens: int, requested: int | None, names: ApiNames) -> int:
        """The answer's token limit: as requested, or what the context leaves; a 400 past the context."""
        limit = self.settings.max_model_len
        if prompt_tokens >= limit:
            raise ApiError(
                400,
                f"This model's maximum context length is {limit} tokens. However, your {names.prompt} resulted in "
                f"{prompt_tokens} tokens. Please reduce the length of the {names.prompt}.",
                param=names.prompt,
                code="context_length_exceeded",
            )
        if requested is not None and prompt_tokens + requested > limit:
            raise ApiError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + requested} tokens ({prompt_tokens} in the {names.prompt}, {requested} in the "
                f"completion). Please reduce the length of the {names.prompt} or {names.token_limit}.",
                param=names.token_limit,
                code="context_length_exceeded",
            )
        return requested if requested is not None else limit - prompt_tokens

    @staticmethod
    def sampling_params(
        request: SampledRequest,
        max_tokens: int,
        logprobs: int | None,
        structured_outputs: StructuredOutputsParams | None = None,
    ) -> SamplingParams:
        """vLLM's parameters for what every API asks alike, its refusal of a combination a 400."""
        try:
            return SamplingParams(
                n=request.n,
                max_tokens=max_tokens,
                temperature=1.0 if request.temperature is None else request.temperature,
                top_p=1.0 if request.top_p is None else request.top_p,
                seed=request.seed,
                stop=request.stop,
                presence_penalty=request.presence_penalty or 0.0,
                frequency_penalty=request.frequency_penalty or 0.0,
                logprobs=logprobs,
                structured_outputs=structured_outputs,
                ignore_eos=request.ignore_eos,
                output_kind=RequestOutputKind.DELTA,
            )
        except (VLLMClientError, ValueError) as exc:
            raise ApiError(400, f"Invalid sampling parameters: {exc}") from exc

    @staticmethod
    def new_id(names: ApiNames) -> tuple[str, int]:
        """An answer's id under its API's prefix, and its creation time."""
        return f"{names.id_prefix}{uuid.uuid4().hex}", int(time.time())

    # ---- generating ----------------------------------------------------------------------------------------

    async def open(self, answer: PreparedAnswer) -> AsyncIterator[RequestOutput]:
        """Start generating and wait for the first output, so that a request the engine refuses (a JSON schema
        it cannot compile, say) still gets a 400 before any byte of the answer has been sent."""
        await self.recorder.before_generation(answer)
        answer.version, lora = await self.versions.adapter(answer.version, answer.pinned)
        self._in_flight.add(answer)
        outputs = self.engine.generate(
            tokens_input(answer.prompt_ids), answer.params, answer.completion_id, lora_request=lora
        )
        try:
            first = await anext(outputs)
        except (VLLMClientError, ValueError) as exc:
            self._in_flight.discard(answer)
            raise ApiError(400, f"The engine refused this request: {exc}") from exc
        except BaseException:  # the client hung up before the first token: recorded as aborted, as later
            self.abort(answer)
            raise
        metrics.TIME_TO_FIRST_TOKEN.observe(time.perf_counter() - answer.started)
        return _prepend(first, outputs)

    async def generate(self, answer: PreparedAnswer) -> None:
        """The whole answer, into its accumulator; ``finish`` records it."""
        outputs = await self.open(answer)
        try:
            async for out in outputs:
                for output in out.outputs:
                    answer.acc.add(output)
        except asyncio.CancelledError:
            self.abort(answer)
            raise

    def _ended(self, answer: PreparedAnswer) -> None:
        self._in_flight.discard(answer)
        metrics.PROMPT_TOKENS.inc(len(answer.prompt_ids))
        metrics.COMPLETION_TOKENS.inc(answer.acc.completion_tokens)

    def abort(self, answer: PreparedAnswer) -> None:
        """A cancelled request (its client hung up) has its record written in the background."""
        self._ended(answer)
        metrics.ABORTED.inc()
        self.recorder.record_in_background(answer, status="aborted")

    async def finish(self, answer: PreparedAnswer) -> None:
        self._ended(answer)
        await self.recorder.record(answer, status="complete")
