"""Chat completions on the embedded vLLM engine: validation against the model, and the answer in chat's shape.

A request is checked and turned into engine inputs (``prepare``), then answered as one JSON body (``complete``) or
as SSE chunks (``stream``); both fold the engine's outputs with the same ``ChoiceAccumulator``. Routing,
generation and the completion record are ``server/answers/``'s, shared with the other APIs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from vllm.outputs import RequestOutput
from vllm.sampling_params import StructuredOutputsParams
from vllm.tokenizers import TokenizerLike
from vllm.tool_parsers import ToolParserManager

from core.chat_template import involves_tools, tool_template
from core.config import ToolSettings
from feedback.records import RecordedMessage
from server.answers.generation import CHAT, ApiNames, Generation
from server.answers.prepared import ChoiceAccumulator, ChoiceState, PreparedAnswer, RecordedRequest
from server.auth import Caller
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
)
from server.chat_api.tools import ToolCalls, ToolCallStream, check_tool_choice, forced_calls
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
    "top_logprobs",
    "response_format",
    "ignore_eos",
    "tool_choice",
    "parallel_tool_calls",
}


@dataclass(eq=False, kw_only=True)
class PreparedChat(PreparedAnswer):
    request: ChatCompletionRequest
    tool_calls: ToolCalls
    """How its answers are read for tool calls (``tools.py``)."""


def recorded_request(request: ChatCompletionRequest) -> RecordedRequest:
    return RecordedRequest(
        model=request.model,
        user=request.user,
        metadata=request.metadata or {},
        store=request.store is not False,
        stream=request.stream,
        conversation=[RecordedMessage.model_validate(m.template_message()) for m in request.messages],
        params=request.model_dump(include=RECORDED_PARAMS, exclude_none=True, mode="json"),
        tools=[tool.model_dump(exclude_none=True) for tool in request.tools] if request.tools else None,
    )


def _chunk_choice(
    stream: ToolCallStream, index: int, text: str, token_ids: Sequence[int], finish_reason: str | None
) -> ChunkChoice | None:
    """One engine step of a choice as a chunk's choice, or None when it has nothing to send yet (a tool call the
    parser holds back)."""
    content, calls, finish_reason = stream.advance(text, token_ids, finish_reason)
    if content is None and calls is None and finish_reason is None:
        return None
    return ChunkChoice(index=index, delta=Delta(content=content, tool_calls=calls), finish_reason=finish_reason)


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
    conversation with tools or tool calls goes through the tool template, any other through the model's own, as
    the trainer renders them (``core/chat_template.py``). The template adds the special tokens it needs; encoding
    adds none unless asked."""
    template_messages = [m.template_message() for m in messages]
    template_tools = [tool.model_dump(exclude_none=True) for tool in tools] if tools else None
    uses_tools = involves_tools(template_messages, template_tools)
    template = tool_template((tool_settings or ToolSettings()).chat_template) if uses_tools else None
    text = tokenizer.apply_chat_template(
        template_messages,
        tools=template_tools,
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message,
        tokenize=False,
    )
    return tokenizer.encode(text, add_special_tokens=add_special_tokens)


class ChatService:
    def __init__(self, generation: Generation):
        self.generation = generation
        self.settings = generation.settings
        self.tokenizer = generation.tokenizer
        ToolParserManager.get_tool_parser(self.settings.tools.parser)  # an unknown name fails the start, not a request

    # ---- validation -------------------------------------------------------------------------------------

    def prepare(self, request: ChatCompletionRequest, caller: Caller, api: ApiNames = CHAT) -> PreparedChat:
        """The request checked and turned into engine inputs; ``api`` is the API it came through, whose answer's id
        is the record's (``resp_`` for ``/v1/responses``) and whose parameters a refusal names."""
        request.user = caller.end_user(request.user)
        routed = self.generation.route(request.model, caller, request.user)
        self._check_limits(request)
        prompt_ids = render_chat(self.tokenizer, request.messages, request.tools, self.settings.tools)
        names = replace(api, token_limit=request.token_limit_name) if api == CHAT else api
        max_tokens = self.generation.answer_budget(len(prompt_ids), request.answer_token_limit, names)
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        constraint = forced_calls(request) or _structured_outputs(request)
        params = self.generation.sampling_params(request, max_tokens, logprobs, constraint)
        completion_id, created = self.generation.new_id(api)
        return PreparedChat(
            recorded=recorded_request(request),
            request=request,
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

    # ---- answering ----------------------------------------------------------------------------------------

    async def complete(self, chat: PreparedChat) -> ChatCompletion:
        """The whole answer as one JSON body."""
        await self.generation.generate(chat)
        await self.generation.finish(chat)
        return ChatCompletion(
            id=chat.completion_id,
            created=chat.created,
            model=chat.request.model,
            system_fingerprint=chat.version,
            choices=[self._choice(chat, index, state) for index, state in enumerate(chat.acc.choices)],
            usage=chat.usage(),
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
        return self._stream_chunks(chat, await self.generation.open(chat))

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
            self.generation.abort(chat)
            raise
        await self.generation.finish(chat)
        if with_usage:
            yield self._chunk(chat, [], usage=chat.usage())
        yield "[DONE]"

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
