"""Request types of ``/v1/responses``, in the shape the OpenAI SDK sends, and their translation to a chat request.

A response is a chat completion under another name (``serving.py``): its input items become chat messages, its
function tools chat tools, ``text.format`` the chat ``response_format``. What comes back uses the SDK's own
response and event types (``openai.types.responses``), so that their shapes are OpenAI's by construction.
Parameters that chatloop does not honour are refused, as on chat (``UNSUPPORTED_PARAMETERS``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, field_validator, model_validator

from server.chat_api.protocol import (
    INT64_MAX,
    MAX_TOOLS,
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    FunctionDefinition,
    JsonSchemaSpec,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
    Tool,
    ToolCall,
    checked_metadata,
    refuse_unsupported,
)

UNSUPPORTED_PARAMETERS = (
    "context_management",
    "conversation",
    "include",
    "max_tool_calls",
    "moderation",
    "prompt",
    "reasoning",
    "safety_identifier",
    "service_tier",
    "top_logprobs",
)
"""OpenAI's response parameters that change what is generated, kept or returned, which chatloop does not honour
(``background`` is refused below unless false)."""
MAX_INPUT_ITEMS = 2048
MAX_ID_CHARS = 128


class ContentPart(BaseModel):
    """Text in a message: ``input_text`` in what a user sends, ``output_text`` in an earlier answer sent back."""

    type: Literal["input_text", "output_text"]
    text: str


class MessageItem(BaseModel):
    model_config = ConfigDict(extra="ignore")  # an output message sent back carries its id, status, annotations

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class FunctionCallItem(BaseModel):
    """A call an earlier answer made, sent back before its output."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call"]
    call_id: str = Field(max_length=256)
    name: str
    arguments: str


class FunctionCallOutputItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call_output"]
    call_id: str = Field(max_length=256)
    output: str | list[ContentPart]

    def text(self) -> str:
        return self.output if isinstance(self.output, str) else "".join(part.text for part in self.output)


def _item_type(item: Any) -> str:
    """An item without ``type`` is a message, as the SDK's "easy input message" is sent."""
    return item.get("type", "message") if isinstance(item, dict) else getattr(item, "type", "message")


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(_item_type),
]


class FunctionTool(BaseModel):
    type: Literal["function"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def chat_tool(self) -> Tool:
        definition = FunctionDefinition(
            name=self.name, description=self.description, parameters=self.parameters, strict=self.strict
        )
        return Tool(type="function", function=definition)


class FunctionToolChoice(BaseModel):
    type: Literal["function"]
    name: str


class TextFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_named(self) -> TextFormat:
        if self.type == "json_schema" and (self.name is None or self.json_schema is None):
            raise ValueError("a json_schema format needs a name and a schema")
        return self

    def response_format(self) -> ResponseFormat:
        if self.type != "json_schema":
            return ResponseFormat(type=self.type)
        spec = JsonSchemaSpec(
            name=self.name, description=self.description, json_schema=self.json_schema, strict=self.strict
        )
        return ResponseFormat(type="json_schema", json_schema=spec)


class TextConfig(BaseModel):
    format: TextFormat | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_verbosity(cls, values: Any) -> Any:
        return refuse_unsupported(values, ("verbosity",))


class ResponseRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | Annotated[list[InputItem], Field(min_length=1, max_length=MAX_INPUT_ITEMS)]
    instructions: str | None = None
    previous_response_id: str | None = Field(None, max_length=MAX_ID_CHARS)
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=INT64_MAX)
    """vLLM's extension, as on chat."""
    ignore_eos: bool = False
    """vLLM's extension, as on chat (its benchmark client sends it)."""
    text: TextConfig | None = None
    tools: list[FunctionTool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | FunctionToolChoice | None = None
    parallel_tool_calls: bool | None = None
    store: bool = True
    """As OpenAI's default: a response is kept (and so can be fetched, continued and rated) unless told not to."""
    metadata: dict[str, str] | None = None
    stream: bool = False
    user: str | None = Field(None, max_length=256)
    background: Literal[False] | None = None
    """Background responses (queued, polled, cancelled) are not offered: only false is accepted."""
    truncation: Literal["disabled"] | None = None
    """Only ``disabled``, OpenAI's default: an input past the context is refused, never cut."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, values: Any) -> Any:
        return refuse_unsupported(values, UNSUPPORTED_PARAMETERS)

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return checked_metadata(value)

    def input_messages(self) -> list[ChatMessage]:
        if isinstance(self.input, str):
            return [ChatMessage(role="user", content=self.input)]
        return items_to_messages(self.input)

    def chat_request(self, context: list[ChatMessage]) -> ChatCompletionRequest:
        """The chat request that answers this: ``context`` is what came before (``previous_response_id``)."""
        instructions = [ChatMessage(role="system", content=self.instructions)] if self.instructions else []
        choice = self.tool_choice
        return ChatCompletionRequest(
            model=self.model,
            messages=[*instructions, *context, *self.input_messages()],
            stream=self.stream,
            max_tokens=self.max_output_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            response_format=self.text.format.response_format() if self.text and self.text.format else None,
            user=self.user,
            store=self.store,
            metadata=self.metadata,
            tools=[tool.chat_tool() for tool in self.tools] if self.tools else None,
            tool_choice=(
                NamedToolChoice(type="function", function=NamedFunction(name=choice.name))
                if isinstance(choice, FunctionToolChoice)
                else choice
            ),
            parallel_tool_calls=self.parallel_tool_calls,
            ignore_eos=self.ignore_eos,
        )


def items_to_messages(items: list[InputItem]) -> list[ChatMessage]:
    """Input items (or an earlier response's output items) as chat messages: calls join the assistant message
    before them, as chat sends them. Raises ``ValidationError`` for a call whose arguments are not JSON."""
    messages: list[ChatMessage] = []
    calls: list[ToolCall] = []  # of the assistant message being gathered, built once its calls are all in

    def close_calls() -> None:
        if calls:
            content = messages.pop().content if messages and messages[-1].role == "assistant" else None
            messages.append(ChatMessage(role="assistant", content=content, tool_calls=list(calls)))
            calls.clear()

    for item in items:
        if isinstance(item, FunctionCallItem):
            calls.append(ToolCall(id=item.call_id, function=FunctionCall(name=item.name, arguments=item.arguments)))
            continue
        close_calls()
        if isinstance(item, MessageItem):
            messages.append(ChatMessage(role=item.role, content=item.text()))
        else:
            messages.append(ChatMessage(role="tool", content=item.text(), tool_call_id=item.call_id))
    close_calls()
    return messages


InputItems = TypeAdapter(list[InputItem])
