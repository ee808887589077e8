"""Text completions on the embedded engine: a raw prompt, no chat template, answered in OpenAI's
``text_completion`` shape, whole or streamed.

Routing, generation and the completion record are ``server/answers/``'s, as for chat: an answer is rateable and
regenerable by its id. Its prompt is recorded as one message of role ``prompt``; such answers are no training data
(``feedback/eligibility.py``: ``raw_prompt``), since the trainer learns chat prompts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from vllm.outputs import RequestOutput

from feedback.records import RecordedMessage
from server.answers.generation import COMPLETIONS, Generation
from server.answers.prepared import ChoiceAccumulator, ChoiceState, PreparedAnswer, RecordedRequest
from server.auth import Caller
from server.chat_api.protocol import TokenLogprob, Usage
from server.completions_api.protocol import Completion, CompletionChoice, CompletionLogprobs, CompletionRequest
from server.errors import ApiError

RECORDED_PARAMS = {
    "n",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "echo",
    "ignore_eos",
}


@dataclass(eq=False, kw_only=True)
class PreparedCompletion(PreparedAnswer):
    request: CompletionRequest
    prompt_text: str
    """The prompt as text: what ``echo`` puts before each answer."""


def completion_logprobs(entries: list[TokenLogprob], start: int = 0) -> CompletionLogprobs:
    """Chat's per-token logprobs in the completions shape: each position's alternatives hold the sampled token too,
    as OpenAI's do ("up to logprobs+1 elements"); offsets count the answer's tokens from ``start`` (where a streamed
    chunk's tokens begin). Offsets follow the tokens, not the text sent: a stop string holds text back while its
    tokens have been generated."""
    offsets, at = [], start
    for entry in entries:
        offsets.append(at)
        at += len(entry.token)
    return CompletionLogprobs(
        tokens=[entry.token for entry in entries],
        token_logprobs=[entry.logprob for entry in entries],
        top_logprobs=[
            # The sampled token last: an alternative that decodes to the same text does not hide its logprob.
            {top.token: top.logprob for top in entry.top_logprobs} | {entry.token: entry.logprob}
            for entry in entries
        ],
        text_offset=offsets,
    )


class CompletionService:
    def __init__(self, generation: Generation, vocab_size: int):
        self.generation = generation
        self.settings = generation.settings
        self.tokenizer = generation.tokenizer
        self.vocab_size = vocab_size

    def prepare(self, request: CompletionRequest, caller: Caller) -> PreparedCompletion:
        request.user = caller.end_user(request.user)
        routed = self.generation.route(request.model, caller, request.user)
        self._check_limits(request)
        prompt_ids = self._prompt_ids(request.prompt)
        max_tokens = self.generation.answer_budget(len(prompt_ids), request.max_tokens, COMPLETIONS)
        prompt_text = request.prompt if isinstance(request.prompt, str) else self.tokenizer.decode(prompt_ids)
        params = self.generation.sampling_params(request, max_tokens, request.logprobs)
        completion_id, created = self.generation.new_id(COMPLETIONS)
        return PreparedCompletion(
            recorded=RecordedRequest(
                model=request.model,
                user=request.user,
                metadata=request.metadata or {},
                store=request.store is not False,
                stream=request.stream,
                conversation=[RecordedMessage(role="prompt", content=prompt_text)],
                params=request.model_dump(include=RECORDED_PARAMS, exclude_none=True, mode="json"),
                raw_prompt=True,
            ),
            request=request,
            prompt_text=prompt_text,
            caller=caller,
            completion_id=completion_id,
            created=created,
            owner=routed.owner,
            principal_id=routed.principal_id,
            version=routed.route.version,
            pinned=routed.route.pinned,
            canary_period=routed.route.canary_period,
            prompt_ids=prompt_ids,
            params=params,
            acc=ChoiceAccumulator(request.n, params.logprobs),
        )

    def _check_limits(self, request: CompletionRequest) -> None:
        if request.n > self.settings.max_n:
            raise ApiError(400, f"n must be at most {self.settings.max_n}.", param="n")
        if request.logprobs is not None and request.logprobs > self.settings.max_top_logprobs:
            raise ApiError(400, f"logprobs must be at most {self.settings.max_top_logprobs}.", param="logprobs")
        if request.echo and request.logprobs is not None:
            raise ApiError(400, "echo cannot be combined with logprobs: the prompt's logprobs are not offered.")

    def _prompt_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise ApiError(400, "The prompt is empty.", param="prompt")
            return self.tokenizer.encode(prompt, add_special_tokens=True)
        if max(prompt) >= self.vocab_size:
            raise ApiError(400, f"Token ids must be below the vocabulary's size, {self.vocab_size}.", param="prompt")
        return prompt

    # ---- answering ----------------------------------------------------------------------------------------

    async def complete(self, completion: PreparedCompletion) -> Completion:
        await self.generation.generate(completion)
        await self.generation.finish(completion)
        choices = [self._choice(completion, index, state) for index, state in enumerate(completion.acc.choices)]
        return self._body(completion, choices, usage=completion.usage())

    def _choice(self, completion: PreparedCompletion, index: int, state: ChoiceState) -> CompletionChoice:
        echoed = completion.prompt_text if completion.request.echo else ""
        logprobs = None
        if completion.request.logprobs is not None:  # never with echo: refused (`_check_limits`)
            logprobs = completion_logprobs(state.logprobs)
        return CompletionChoice(
            index=index, text=echoed + "".join(state.text), logprobs=logprobs, finish_reason=state.finish_reason
        )

    async def stream(self, completion: PreparedCompletion) -> AsyncIterator[str]:
        """The answer as SSE ``data`` payloads: text deltas, one choice a chunk, usage if asked, ``[DONE]``."""
        return self._chunks(completion, await self.generation.open(completion))

    async def _chunks(
        self, completion: PreparedCompletion, outputs: AsyncIterator[RequestOutput]
    ) -> AsyncIterator[str]:
        request, acc = completion.request, completion.acc
        echo_pending = set(range(request.n)) if request.echo else set()
        # As chat: `"usage": null` on every chunk when usage was asked for, no `usage` otherwise.
        exclude = None if request.include_usage_in_stream else {"usage"}
        token_chars = [0] * request.n  # per choice, where the next chunk's offsets start
        try:
            async for out in outputs:
                for output in out.outputs:
                    step = acc.add(output)
                    echoed = completion.prompt_text if output.index in echo_pending else ""
                    echo_pending.discard(output.index)
                    logprobs = None
                    if step is not None:
                        logprobs = completion_logprobs(step, token_chars[output.index])
                        token_chars[output.index] += sum(len(entry.token) for entry in step)
                    choice = CompletionChoice(
                        index=output.index,
                        text=echoed + output.text,
                        logprobs=logprobs,
                        finish_reason=output.finish_reason,
                    )
                    yield self._body(completion, [choice]).model_dump_json(exclude=exclude)
        except asyncio.CancelledError:
            self.generation.abort(completion)
            raise
        await self.generation.finish(completion)
        if request.include_usage_in_stream:
            yield self._body(completion, [], usage=completion.usage()).model_dump_json()
        yield "[DONE]"

    @staticmethod
    def _body(
        completion: PreparedCompletion, choices: list[CompletionChoice], usage: Usage | None = None
    ) -> Completion:
        return Completion(
            id=completion.completion_id,
            created=completion.created,
            model=completion.request.model,
            system_fingerprint=completion.version,
            choices=choices,
            usage=usage,
        )
