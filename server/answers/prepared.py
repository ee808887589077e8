"""A request on its way to an answer, whatever API it came through: checked and turned into engine inputs
(``PreparedAnswer``), what its record keeps of it (``RecordedRequest``), and the choices folded together from the
engine's outputs (``ChoiceAccumulator``).

The generation (``generation.py``) and the completion record (``recording.py``) read them; one accumulator serves
the streamed and the plain answer, so that the two cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vllm import SamplingParams
from vllm.outputs import CompletionOutput

from feedback.records import RecordedMessage, WeightChange
from server.auth import Caller
from server.chat_api.protocol import TokenLogprob, TopLogprob, Usage

MIN_LOGPROB = -9999.0  # JSON has no -inf; OpenAI clients expect a finite float


@dataclass
class RecordedRequest:
    """What the completion record keeps of a request (``recording.py``), in the same shape for every API."""

    model: str
    user: str | None
    metadata: dict[str, str]
    store: bool
    stream: bool
    conversation: list[RecordedMessage]
    """The prompt as messages: a chat's messages, or a raw prompt as one message of role ``prompt``."""
    params: dict[str, Any]
    """The sampling parameters asked for, as the API names them (the token limit is added when recorded)."""
    tools: list[dict[str, Any]] | None = None
    raw_prompt: bool = False


@dataclass(eq=False, kw_only=True)  # hashed by identity: the generation keeps a set of those in flight
class PreparedAnswer:
    """A request checked against the model and turned into engine inputs, ready to generate."""

    recorded: RecordedRequest
    caller: Caller
    completion_id: str
    created: int
    owner: str
    """The caller's user id (API key and ``user``): the traffic split and feedback ownership go by it."""
    principal_id: str
    version: str
    pinned: bool
    canary_period: str | None
    """The canary period the routing chose the version in (``server/versions/manager.py: Route``)."""
    prompt_ids: list[int]
    params: SamplingParams
    acc: ChoiceAccumulator
    started: float = field(default_factory=time.perf_counter)
    weight_changes: list[WeightChange] = field(default_factory=list)
    """Swaps of the active version's weights while this answer was generated (``server/versions/loaded.py``)."""
    replaces_version: str | None = None
    """For a regeneration whose link was checked: the version that wrote the answer it replaces."""
    stored_response: dict[str, Any] | None = None
    """For ``/v1/responses``: the response object as returned, kept in the record for retrieval and chaining."""

    def usage(self) -> Usage:
        prompt, completion = len(self.prompt_ids), self.acc.completion_tokens
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


@dataclass
class ChoiceState:
    text: list[str] = field(default_factory=list)
    tokens: int = 0
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)


class ChoiceAccumulator:
    """Folds the engine's delta outputs into per-choice state, and reports each step's new tokens."""

    def __init__(self, n: int, top_logprobs: int | None):
        self.choices = [ChoiceState() for _ in range(n)]
        self.top_logprobs = top_logprobs

    def add(self, output: CompletionOutput) -> list[TokenLogprob] | None:
        state = self.choices[output.index]
        state.text.append(output.text)
        state.tokens += len(output.token_ids)
        state.finish_reason = output.finish_reason
        if self.top_logprobs is None or output.logprobs is None:
            return None
        step = token_logprobs(output.token_ids, output.logprobs, self.top_logprobs)
        state.logprobs.extend(step)
        return step

    @property
    def completion_tokens(self) -> int:
        return sum(choice.tokens for choice in self.choices)


def _finite(logprob: float) -> float:
    return max(logprob, MIN_LOGPROB)


def token_logprobs(token_ids: Sequence[int], logprobs: Sequence[dict[int, Any]], top_n: int) -> list[TokenLogprob]:
    """vLLM's per-position candidate dicts, in OpenAI's ``logprobs.content`` shape."""
    entries = []
    for token_id, candidates in zip(token_ids, logprobs, strict=True):
        chosen = candidates[token_id]
        ranked = sorted(candidates.values(), key=lambda candidate: candidate.rank)[:top_n]
        entries.append(
            TokenLogprob(
                token=chosen.decoded_token or "",
                logprob=_finite(chosen.logprob),
                bytes=list((chosen.decoded_token or "").encode()),
                top_logprobs=[
                    TopLogprob(
                        token=candidate.decoded_token or "",
                        logprob=_finite(candidate.logprob),
                        bytes=list((candidate.decoded_token or "").encode()),
                    )
                    for candidate in ranked
                ],
            )
        )
    return entries
