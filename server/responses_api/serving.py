"""``/v1/responses`` on the chat service: a response is a chat completion of its input, under a ``resp_`` id.

Why a translation and not a second engine path: everything chat does for an answer (routing to a version,
limits, tool calls, structured outputs, the completion record that makes it rateable) then holds for responses by
construction. The record keeps the response object as returned (``CompletionRecord.response``), so that
``GET /v1/responses/{id}`` returns it and ``previous_response_id`` continues from it; stored responses belong to
the principal (API key or account) that created them. Output items are built by one ``OutputItems`` for the
streamed and the whole answer, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)
from pydantic import BaseModel, ValidationError
from vllm.outputs import RequestOutput

from feedback.records import CompletionRecord, CompletionRecords, RecordedMessage
from server.answers.generation import RESPONSES
from server.auth import Caller
from server.chat_api.protocol import ChatMessage, DeltaFunctionCall, DeltaToolCall, FunctionCall, ToolCall
from server.chat_api.serving import ChatService, PreparedChat
from server.errors import ApiError
from server.responses_api.protocol import InputItems, ResponseRequest, items_to_messages

Status = Literal["in_progress", "completed", "incomplete", "cancelled"]


@dataclass
class _Item:
    """An output item in the making: a message's text, or a function call's arguments."""

    id: str
    kind: Literal["message", "function_call"]
    text: str = ""
    name: str = ""
    call_id: str = ""
    status: Literal["in_progress", "completed", "incomplete"] = "in_progress"

    def model(self, status: Literal["in_progress", "completed", "incomplete"]) -> BaseModel:
        if self.kind == "function_call":
            return ResponseFunctionToolCall(
                type="function_call",
                id=self.id,
                call_id=self.call_id,
                name=self.name,
                arguments=self.text,
                status=status,
            )
        content = [self.part()] if status != "in_progress" else []
        return ResponseOutputMessage(id=self.id, type="message", role="assistant", status=status, content=content)

    def part(self) -> ResponseOutputText:
        return ResponseOutputText(type="output_text", text=self.text, annotations=[])


@dataclass
class OutputItems:
    """A response's output items as the answer arrives, with the stream events that tell a client so (each with
    its ``sequence_number``)."""

    items: list[_Item] = field(default_factory=list)
    calls: dict[int, int] = field(default_factory=dict)
    """A tool call's index in the chat deltas → its item's place in ``items``."""
    open: int | None = None
    sequence: int = 0

    def event(self, kind: type[BaseModel], **fields: Any) -> BaseModel:
        event = kind(sequence_number=self.sequence, **fields)
        self.sequence += 1
        return event

    def add(self, content: str | None, calls: list[DeltaToolCall] | None) -> list[BaseModel]:
        events = self._text(content) if content else []
        for call in calls or []:
            events += self._call(call)
        return events

    def _text(self, delta: str) -> list[BaseModel]:
        events = []
        if self.open is None or self.items[self.open].kind != "message":
            events += self._start(_Item(id=f"msg_{uuid.uuid4().hex}", kind="message"))
            item = self.items[self.open]
            events.append(
                self.event(
                    ResponseContentPartAddedEvent,
                    type="response.content_part.added",
                    item_id=item.id,
                    output_index=self.open,
                    content_index=0,
                    part=item.part(),
                )
            )
        item = self.items[self.open]
        item.text += delta
        events.append(
            self.event(
                ResponseTextDeltaEvent,
                type="response.output_text.delta",
                item_id=item.id,
                output_index=self.open,
                content_index=0,
                delta=delta,
                logprobs=[],
            )
        )
        return events

    def _call(self, delta: DeltaToolCall) -> list[BaseModel]:
        events = []
        if delta.index not in self.calls:
            item = _Item(id=f"fc_{uuid.uuid4().hex}", kind="function_call", call_id=delta.id or "")
            events += self._start(item)
            self.calls[delta.index] = self.open
        index = self.calls[delta.index]
        item = self.items[index]
        item.name += delta.function.name or ""
        if delta.function.arguments:
            item.text += delta.function.arguments
            events.append(
                self.event(
                    ResponseFunctionCallArgumentsDeltaEvent,
                    type="response.function_call_arguments.delta",
                    item_id=item.id,
                    output_index=index,
                    delta=delta.function.arguments,
                )
            )
        return events

    def _start(self, item: _Item) -> list[BaseModel]:
        events = self._close_open("completed")
        self.items.append(item)
        self.open = len(self.items) - 1
        return [
            *events,
            self.event(
                ResponseOutputItemAddedEvent,
                type="response.output_item.added",
                output_index=self.open,
                item=item.model("in_progress"),
            ),
        ]

    def close(self, status: Status) -> list[BaseModel]:
        """The events that end the open item, once the answer has ended."""
        return self._close_open("incomplete" if status in ("incomplete", "cancelled") else "completed")

    def _close_open(self, status: Literal["completed", "incomplete"]) -> list[BaseModel]:
        if self.open is None:
            return []
        index, item = self.open, self.items[self.open]
        self.open = None
        item.status = status
        if item.kind == "message":
            done = [
                self.event(
                    ResponseTextDoneEvent,
                    type="response.output_text.done",
                    item_id=item.id,
                    output_index=index,
                    content_index=0,
                    text=item.text,
                    logprobs=[],
                ),
                self.event(
                    ResponseContentPartDoneEvent,
                    type="response.content_part.done",
                    item_id=item.id,
                    output_index=index,
                    content_index=0,
                    part=item.part(),
                ),
            ]
        else:
            done = [
                self.event(
                    ResponseFunctionCallArgumentsDoneEvent,
                    type="response.function_call_arguments.done",
                    item_id=item.id,
                    output_index=index,
                    arguments=item.text,
                )
            ]
        item_done = self.event(
            ResponseOutputItemDoneEvent, type="response.output_item.done", output_index=index, item=item.model(status)
        )
        return [*done, item_done]

    def models(self) -> list[BaseModel]:
        """The items as they were closed: only the last one is cut short when the answer was."""
        return [item.model(item.status) for item in self.items]


@dataclass
class PreparedResponse:
    body: ResponseRequest
    chat: PreparedChat
    output: OutputItems = field(default_factory=OutputItems)


def sse(event: BaseModel) -> dict[str, str]:
    """An event as OpenAI sends it: its type as the SSE event name, itself as the data."""
    return {"event": event.type, "data": event.model_dump_json(exclude_none=True, by_alias=True)}


def _chat_message(message: RecordedMessage) -> ChatMessage:
    """A recorded message as it was sent: tool call arguments back to JSON text."""
    calls = [
        ToolCall(
            id=c["id"],
            function=FunctionCall(name=c["function"]["name"], arguments=json.dumps(c["function"]["arguments"])),
        )
        for c in message.tool_calls or []
    ]
    return ChatMessage(
        role=message.role, content=message.content, tool_calls=calls or None, tool_call_id=message.tool_call_id
    )


def _not_found(response_id: str, param: str | None = None) -> ApiError:
    return ApiError(404, f"No response found with id '{response_id}'.", param=param, code="response_not_found")


class ResponseService:
    def __init__(self, chat: ChatService, records: CompletionRecords):
        self.chat = chat
        self.records = records

    # ---- stored responses ---------------------------------------------------------------------------------

    async def owned(self, response_id: str, caller: Caller, param: str | None = None) -> CompletionRecord:
        """A stored response of this caller's principal; a 404 otherwise, which says nothing of whether one exists
        for someone else (nor of chat completions, which are no responses)."""
        record = await self.records.get(response_id)
        principal = self.chat.generation.versions.ids.principal_id(caller.key_id)
        if record is None or record.response is None or record.principal_id != principal:
            raise _not_found(response_id, param)
        return record

    async def retrieve(self, response_id: str, caller: Caller) -> dict[str, Any]:
        return (await self.owned(response_id, caller)).response or {}

    async def delete(self, response_id: str, caller: Caller) -> dict[str, Any]:
        await self.records.forget_response(await self.owned(response_id, caller))
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def cancel(self, response_id: str, caller: Caller) -> None:
        await self.owned(response_id, caller)
        raise ApiError(400, "Cannot cancel a synchronous response: only background responses can be cancelled.")

    async def _context(self, previous_id: str, caller: Caller) -> list[ChatMessage]:
        """What a response continues from: the previous response's conversation (its instructions left out, as
        OpenAI does) and its output."""
        record = await self.owned(previous_id, caller, param="previous_response_id")
        stored = record.response or {}
        conversation = record.conversation[1:] if stored.get("instructions") else record.conversation
        try:
            output = items_to_messages(InputItems.validate_python(stored.get("output", [])))
        except ValidationError as exc:  # a call cut off mid-arguments (by its token limit) cannot be sent back
            message = f"The response '{previous_id}' cannot be continued: {exc.errors()[0]['msg']}."
            raise ApiError(400, message, param="previous_response_id") from exc
        return [_chat_message(m) for m in conversation] + output

    # ---- answering ----------------------------------------------------------------------------------------

    async def prepare(self, body: ResponseRequest, caller: Caller) -> PreparedResponse:
        context = await self._context(body.previous_response_id, caller) if body.previous_response_id else []
        try:
            chat_request = body.chat_request(context)
        except ValidationError as exc:
            raise ApiError(400, f"Invalid input: {exc.errors()[0]['msg']}", param="input") from exc
        return PreparedResponse(body, self.chat.prepare(chat_request, caller, RESPONSES))

    async def create(self, prepared: PreparedResponse) -> dict[str, Any]:
        """The whole response as one JSON body."""
        chat = prepared.chat
        await self.chat.generation.generate(chat)
        state = chat.acc.choices[0]
        answer = chat.tool_calls.parse("".join(state.text), state.finish_reason)
        deltas = [
            DeltaToolCall(index=i, id=c.id, type="function", function=DeltaFunctionCall(**c.function.model_dump()))
            for i, c in enumerate(answer.tool_calls)
        ]
        prepared.output.add(answer.content, deltas)
        status = _status(answer.finish_reason)
        prepared.output.close(status)
        return await self._finish(prepared, status)

    async def stream(self, prepared: PreparedResponse) -> AsyncIterator[dict[str, str]]:
        """The response as SSE events; a request the engine refuses gets its 400 before the first."""
        return self._events(prepared, await self.chat.generation.open(prepared.chat))

    async def _events(
        self, prepared: PreparedResponse, outputs: AsyncIterator[RequestOutput]
    ) -> AsyncIterator[dict[str, str]]:
        chat, items = prepared.chat, prepared.output
        yield sse(items.event(ResponseCreatedEvent, type="response.created", response=self._response(prepared)))
        yield sse(items.event(ResponseInProgressEvent, type="response.in_progress", response=self._response(prepared)))
        stream = chat.tool_calls.stream()
        finish_reason = None
        try:
            async for out in outputs:
                for output in out.outputs:
                    chat.acc.add(output)
                    content, calls, finish_reason = stream.advance(output.text, output.token_ids, output.finish_reason)
                    for event in items.add(content, calls):
                        yield sse(event)
        except asyncio.CancelledError:
            items.close("cancelled")
            chat.stored_response = self._response(prepared, "cancelled").model_dump(
                mode="json", exclude_none=True, by_alias=True
            )
            self.chat.generation.abort(chat)
            raise
        status = _status(finish_reason)
        for event in items.close(status):
            yield sse(event)
        response = await self._finish(prepared, status)
        last = ResponseCompletedEvent if status == "completed" else ResponseIncompleteEvent
        yield sse(items.event(last, type=f"response.{status}", response=response))

    async def _finish(self, prepared: PreparedResponse, status: Status) -> dict[str, Any]:
        """The response as returned and stored: the record is written before the client reads it, so that it
        can be rated, fetched or continued at once."""
        response = self._response(prepared, status).model_dump(mode="json", exclude_none=True, by_alias=True)
        prepared.chat.stored_response = response
        await self.chat.generation.finish(prepared.chat)
        return response

    def _response(self, prepared: PreparedResponse, status: Status = "in_progress") -> Response:
        body, chat = prepared.body, prepared.chat
        prompt, completion = len(chat.prompt_ids), chat.acc.completion_tokens
        ended = status != "in_progress"
        return Response.model_validate(
            {
                "id": chat.completion_id,
                "object": "response",
                "created_at": chat.created,
                "completed_at": time.time() if status == "completed" else None,
                "model": body.model,
                "status": status,
                "output": [item.model_dump(mode="json", by_alias=True) for item in prepared.output.models()]
                if ended
                else [],
                "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
                "error": None,
                "instructions": body.instructions,
                "previous_response_id": body.previous_response_id,
                "max_output_tokens": body.max_output_tokens,
                "temperature": chat.params.temperature,
                "top_p": chat.params.top_p,
                "tools": [tool.model_dump() for tool in body.tools or []],
                "tool_choice": _tool_choice(body),
                "parallel_tool_calls": body.parallel_tool_calls is not False,
                "text": body.text.model_dump(by_alias=True, exclude_none=True)
                if body.text
                else {"format": {"type": "text"}},
                "metadata": body.metadata or {},
                "user": chat.request.user,
                "background": False,
                "truncation": "disabled",
                "usage": {
                    "input_tokens": prompt,
                    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                    "output_tokens": completion,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": prompt + completion,
                }
                if ended
                else None,
            }
        )


def _status(finish_reason: str | None) -> Status:
    return "incomplete" if finish_reason == "length" else "completed"


def _tool_choice(body: ResponseRequest) -> Any:
    choice = body.tool_choice
    return choice.model_dump() if isinstance(choice, BaseModel) else choice or "auto"
