"""Chat completions on the embedded vLLM engine: validation against the model, generation and streaming.

A request is checked and turned into engine inputs (``prepare``), then answered as one JSON body (``complete``) or
as SSE chunks (``stream``); both fold the engine's outputs with the same ``ChoiceAccumulator`` (``answer.py``).
The completion record is ``recording.py``'s: this module tells it when an answer starts and ends.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence

from vllm import SamplingParams
from vllm.exceptions import VLLMClientError
from vllm.inputs.engine import tokens_input
from vllm.outputs import RequestOutput
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.tokenizers import TokenizerLike
from vllm.tool_parsers import ToolParserManager
from vllm.v1.engine.async_llm import AsyncLLM

from core.config import Settings, ToolSettings
from core.policy import split_model_name
from feedback.records import WeightChange
from server import metrics
from server.auth import Caller
from server.chat_api.answer import ChoiceAccumulator, ChoiceState, PreparedChat
from server.chat_api.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    Tool,
    Usage,
    uses_tools,
)
from server.chat_api.recording import ChatRecorder
from server.chat_api.tools import ToolCalls, ToolCallStream, check_tool_choice, forced_calls, tool_template
from server.errors import ApiError
from server.versions.manager import VersionManager


def _chunk_choice(
    stream: ToolCallStream, index: int, text: str, token_ids: Sequence[int], finish_reason: str | None
) -> ChunkChoice | None:
    """One engine step of a choice as a chunk's choice, or None when it has nothing to send yet (a tool call the
    parser holds back)."""
    content, calls = stream.step(text, token_ids)
    if finish_reason is not None:
        more_content, more_calls, finish_reason = stream.end(finish_reason)
        content = content + more_content if content and more_content else content or more_content
        calls = [*(calls or []), *(more_calls or [])] or None
    if content is None and calls is None and finish_reason is None:
        return None
    return ChunkChoice(index=index, delta=Delta(content=content, tool_calls=calls), finish_reason=finish_reason)


async def _prepend(first: RequestOutput, rest: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestOutput]:
    yield first
    async for out in rest:
        yield out


def _structured_outputs(request: ChatCompletionRequest) -> StructuredOutputsParams | None:
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return StructuredOutputsParams(json_object=True)
    spec = response_format.json_schema
    if spec is None or spec.json_schema is None:
        raise ApiError(
            400, "response_format of type json_schema needs json_schema.schema.", param="response_format.json_schema"
        )
    return StructuredOutputsParams(json=spec.json_schema)


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


def render_chat(
    tokenizer: TokenizerLike,
    messages: list[ChatMessage],
    tools: list[Tool] | None = None,
    tool_settings: ToolSettings | None = None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    add_special_tokens: bool = False,
) -> list[int]:
    """The prompt's token ids through the chat template: what the engine sees, and what ``/tokenize`` counts. A
    conversation with tools or tool calls goes through the tool template (``tools.py``), any other through the
    model's own. The template adds the special tokens it needs; encoding adds none unless asked."""
    template = tool_template((tool_settings or ToolSettings()).chat_template) if uses_tools(messages, tools) else None
    text = tokenizer.apply_chat_template(
        [m.template_message() for m in messages],
        tools=[tool.model_dump(exclude_none=True) for tool in tools] if tools else None,
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message,
        tokenize=False,
    )
    return tokenizer.encode(text, add_special_tokens=add_special_tokens)


class ChatService:
    def __init__(self, engine: AsyncLLM, settings: Settings, recorder: ChatRecorder, versions: VersionManager):
        self.engine = engine
        self.settings = settings
        self.recorder = recorder
        self.versions = versions
        self.tokenizer = engine.get_tokenizer()
        ToolParserManager.get_tool_parser(settings.tools.parser)  # an unknown name fails the start, not a request
        self._in_flight: set[PreparedChat] = set()
        versions.loaded.on_swap.append(self._note_swap)

    def _note_swap(self, active: str) -> None:
        for chat in self._in_flight:
            chat.weight_changes.append(WeightChange(after_tokens=chat.acc.completion_tokens, active=active))

    # ---- validation -------------------------------------------------------------------------------------

    def prepare(self, request: ChatCompletionRequest, caller: Caller) -> PreparedChat:
        pinned = pinned_version(request.model, self.settings.model_alias)
        request.user = caller.end_user(request.user)
        owner = self.versions.ids.user_id(caller.key_id, request.user)
        route = self.versions.route(pinned, owner, admin=caller.is_admin)
        self._check_limits(request)
        prompt_ids = render_chat(self.tokenizer, request.messages, request.tools, self.settings.tools)
        max_tokens = self._answer_budget(len(prompt_ids), request.answer_token_limit)
        params = self._sampling_params(request, max_tokens)
        return PreparedChat(
            request=request,
            caller=caller,
            completion_id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            owner=owner,
            principal_id=self.versions.ids.principal_id(caller.key_id),
            version=route.version,
            pinned=route.pinned,
            canary_period=route.canary_period,
            prompt_ids=prompt_ids,
            params=params,
            acc=ChoiceAccumulator(request.n, params.logprobs),
            tool_calls=ToolCalls(request, self.tokenizer, self.settings.tools),
        )

    def _check_limits(self, request: ChatCompletionRequest) -> None:
        check_tool_choice(request)
        if request.n > self.settings.max_n:
            raise ApiError(400, f"n must be at most {self.settings.max_n}.", param="n")
        if request.top_logprobs is not None:
            if not request.logprobs:
                raise ApiError(400, "top_logprobs needs logprobs set to true.", param="top_logprobs")
            if request.top_logprobs > self.settings.max_top_logprobs:
                limit = self.settings.max_top_logprobs
                raise ApiError(400, f"top_logprobs must be at most {limit}.", param="top_logprobs")

    def _answer_budget(self, prompt_tokens: int, requested: int | None) -> int:
        limit = self.settings.max_model_len
        if prompt_tokens >= limit:
            raise ApiError(
                400,
                f"This model's maximum context length is {limit} tokens. However, your messages resulted in "
                f"{prompt_tokens} tokens. Please reduce the length of the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        if requested is not None and prompt_tokens + requested > limit:
            raise ApiError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + requested} tokens ({prompt_tokens} in the messages, {requested} in the "
                "completion). Please reduce the length of the messages or completion.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return requested if requested is not None else limit - prompt_tokens

    def _sampling_params(self, request: ChatCompletionRequest, max_tokens: int) -> SamplingParams:
        try:
            return self._build_sampling_params(request, max_tokens)
        except (VLLMClientError, ValueError) as exc:
            raise ApiError(400, f"Invalid sampling parameters: {exc}") from exc

    def _build_sampling_params(self, request: ChatCompletionRequest, max_tokens: int) -> SamplingParams:
        return SamplingParams(
            n=request.n,
            max_tokens=max_tokens,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            seed=request.seed,
            stop=request.stop,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            logprobs=(request.top_logprobs or 0) if request.logprobs else None,
            structured_outputs=forced_calls(request) or _structured_outputs(request),
            ignore_eos=request.ignore_eos,
            output_kind=RequestOutputKind.DELTA,
        )

    # ---- generation ---------------------------------------------------------------------------------------

    async def _open(self, chat: PreparedChat) -> AsyncIterator[RequestOutput]:
        """Start generating and wait for the first output, so that a request the engine refuses (a JSON schema
        it cannot compile, say) still gets a 400 before any byte of the answer has been sent."""
        await self.recorder.before_generation(chat)
        chat.version, lora = await self.versions.adapter(chat.version, chat.pinned)
        self._in_flight.add(chat)
        outputs = self.engine.generate(
            tokens_input(chat.prompt_ids), chat.params, chat.completion_id, lora_request=lora
        )
        try:
            first = await anext(outputs)
        except (VLLMClientError, ValueError) as exc:
            self._in_flight.discard(chat)
            raise ApiError(400, f"The engine refused this request: {exc}") from exc
        metrics.TIME_TO_FIRST_TOKEN.observe(time.perf_counter() - chat.started)
        return _prepend(first, outputs)

    async def complete(self, chat: PreparedChat) -> ChatCompletion:
        """The whole answer as one JSON body."""
        outputs = await self._open(chat)
        acc = chat.acc
        try:
            async for out in outputs:
                for output in out.outputs:
                    acc.add(output)
        except asyncio.CancelledError:
            self._aborted(chat)
            raise
        await self._completed(chat)
        return ChatCompletion(
            id=chat.completion_id,
            created=chat.created,
            model=chat.request.model,
            system_fingerprint=chat.version,
            choices=[self._choice(chat, index, state) for index, state in enumerate(acc.choices)],
            usage=self._usage(chat),
        )

    @staticmethod
    def _choice(chat: PreparedChat, index: int, state: ChoiceState) -> Choice:
        answer = chat.tool_calls.parse("".join(state.text), state.finish_reason)
        return Choice(
            index=index,
            message=AssistantMessage(content=answer.content, tool_calls=answer.tool_calls),
            logprobs=ChoiceLogprobs(content=state.logprobs) if chat.request.logprobs else None,
            finish_reason=answer.finish_reason,
        )

    async def stream(self, chat: PreparedChat) -> AsyncIterator[str]:
        """The answer as SSE ``data`` payloads: role chunks, content deltas, finish chunks, usage, ``[DONE]``."""
        return self._stream_chunks(chat, await self._open(chat))

    async def _stream_chunks(self, chat: PreparedChat, outputs: AsyncIterator[RequestOutput]) -> AsyncIterator[str]:
        acc = chat.acc
        with_usage = chat.request.include_usage_in_stream
        streams = [chat.tool_calls.stream() for _ in range(chat.request.n)]
        for index in range(chat.request.n):
            role = ChunkChoice(index=index, delta=Delta(role="assistant", content=""))
            yield self._chunk(chat, [role], with_usage=with_usage)
        try:
            async for out in outputs:
                for output in out.outputs:  # one choice a chunk, as OpenAI streams: clients read choices[0]
                    step_logprobs = acc.add(output)
                    choice = _chunk_choice(
                        streams[output.index], output.index, output.text, output.token_ids, output.finish_reason
                    )
                    if choice is None and step_logprobs is None:
                        continue
                    choice = choice or ChunkChoice(index=output.index, delta=Delta())
                    choice.logprobs = ChoiceLogprobs(content=step_logprobs) if step_logprobs is not None else None
                    yield self._chunk(chat, [choice], with_usage=with_usage)
        except asyncio.CancelledError:
            self._aborted(chat)
            raise
        await self._completed(chat)
        if with_usage:
            yield self._chunk(chat, [], usage=self._usage(chat))
        yield "[DONE]"

    def _ended(self, chat: PreparedChat) -> None:
        self._in_flight.discard(chat)
        metrics.PROMPT_TOKENS.inc(len(chat.prompt_ids))
        metrics.COMPLETION_TOKENS.inc(chat.acc.completion_tokens)

    def _aborted(self, chat: PreparedChat) -> None:
        """A cancelled request (its client hung up) has its record written in the background."""
        self._ended(chat)
        metrics.ABORTED.inc()
        self.recorder.record_in_background(chat, status="aborted")

    async def _completed(self, chat: PreparedChat) -> None:
        self._ended(chat)
        await self.recorder.record(chat, status="complete")

    def _chunk(
        self, chat: PreparedChat, choices: list[ChunkChoice], *, with_usage: bool = False, usage: Usage | None = None
    ) -> str:
        chunk = ChatCompletionChunk(
            id=chat.completion_id,
            created=chat.created,
            model=chat.request.model,
            system_fingerprint=chat.version,
            choices=choices,
            usage=usage,
        )
        # OpenAI sends `"usage": null` on every chunk but the last when usage was asked for, and omits it otherwise.
        exclude = None if (with_usage or usage is not None) else {"usage"}
        return chunk.model_dump_json(exclude=exclude)

    def _usage(self, chat: PreparedChat) -> Usage:
        prompt, completion = len(chat.prompt_ids), chat.acc.completion_tokens
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
