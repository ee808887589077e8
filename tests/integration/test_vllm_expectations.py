"""vLLM's own expectations of its OpenAI entrypoints, where they apply to chatloop: the request and response shapes
that vLLM's tests check (``tests/entrypoints/openai/chat_completion/test_chat.py``,
``tests/entrypoints/openai/completion/test_completion.py`` and ``test_completion_text_offset.py``, and
``tests/entrypoints/openai/responses/``), asked of the real server through the official OpenAI SDK.

chatloop answers through vLLM's engine but with its own API layer, so a client written against ``vllm serve`` should
find the same shapes here. What vLLM tests that chatloop refuses on purpose (batch prompts, ``echo`` with ``logprobs``,
``logit_bias``, custom roles, background responses), vLLM's own extensions that chatloop does not offer
(``prompt_logprobs``, ``structured_outputs``, ``continuous_usage_stats``, ...), and exact token counts of vLLM's test
models are left out. Every answer is greedy and at most 10 tokens long, so that the whole file is quick on a CPU.
"""

from __future__ import annotations

import math
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.helpers import ServerHandle

pytestmark = pytest.mark.integration

SESSION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Count from 1 to 1000, separated by commas."},
]
"""A chat whose greedy answer runs far past 10 tokens, so that every limit below ends it with ``length``."""
COUNTING = "1, 2, 3, 4, 5, 6,"
"""A raw prompt that the model goes on counting from, past any token limit below."""
OPENAI_MIN_LOGPROB = -9999.0
"""The lowest logprob OpenAI sends (JSON has no -inf); vLLM's tests bound every logprob by it."""


@pytest.fixture(scope="module")
def client(server: ServerHandle) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key=server.user_key, max_retries=0, timeout=120)


def token_count(server: ServerHandle, body: dict[str, Any]) -> int:
    """What ``/tokenize`` counts for a prompt or a chat: the ``usage.prompt_tokens`` an answer to it must report."""
    with server.http() as http:
        response = http.post("/tokenize", json={"model": "chatloop", **body})
    assert response.status_code == 200, response.text
    return response.json()["count"]


def usage_triple(usage: Any) -> tuple[int, int, int]:
    return usage.prompt_tokens, usage.completion_tokens, usage.total_tokens


# ---- chat completions (vLLM: tests/entrypoints/openai/chat_completion/test_chat.py) -------------------------------


def test_single_chat_session(server: ServerHandle, client: OpenAI) -> None:
    """From vLLM's ``test_chat.py::test_single_chat_session``: one choice, cut at the token limit with ``length``,
    usage that adds up, an assistant message, and a second turn on top of the first. Adapted: the prompt count is
    what ``/tokenize`` says rather than vLLM's model-specific 37, greedy, ``max_completion_tokens`` 5 as vLLM's."""
    answer = client.chat.completions.create(model="chatloop", messages=SESSION, max_completion_tokens=5, temperature=0)
    assert answer.id.startswith("chatcmpl-") and answer.object == "chat.completion"
    assert len(answer.choices) == 1
    (choice,) = answer.choices
    assert choice.index == 0 and choice.finish_reason == "length"
    prompt = token_count(server, {"messages": SESSION})
    assert usage_triple(answer.usage) == (prompt, 5, prompt + 5)
    assert choice.message.role == "assistant" and choice.message.content
    follow_up = [
        *SESSION,
        {"role": "assistant", "content": choice.message.content},
        {"role": "user", "content": "Express your result in JSON."},
    ]
    second = client.chat.completions.create(
        model="chatloop", messages=follow_up, max_completion_tokens=5, temperature=0
    )
    assert second.choices[0].message.role == "assistant" and second.choices[0].message.content
    assert second.usage.prompt_tokens == token_count(server, {"messages": follow_up}) > prompt


@pytest.mark.parametrize(
    ("options", "top"),
    [
        ({"logprobs": False}, None),
        ({"logprobs": True, "top_logprobs": 0}, 0),
        ({"logprobs": True, "top_logprobs": 5}, 5),
    ],
    ids=["off", "zero", "five"],
)
def test_chat_logprobs_shapes(client: OpenAI, options: dict[str, Any], top: int | None) -> None:
    """From vLLM's ``test_chat.py::test_no_logprobs_chat``, ``test_zero_logprobs_chat`` and
    ``test_some_logprobs_chat`` (no ``logprobs`` without asking, none or exactly N alternatives when asked), with
    the bound of ``test_structured_outputs_choice_chat_logprobs`` (no logprob below -9999). Adapted: every token is
    checked, not only the first, and as the answer is greedy the token chosen is the best alternative."""
    answer = client.chat.completions.create(model="chatloop", messages=SESSION, max_tokens=5, temperature=0, **options)
    (choice,) = answer.choices
    if top is None:
        assert choice.logprobs is None
        return
    entries = choice.logprobs.content
    assert len(entries) == answer.usage.completion_tokens == 5
    for entry in entries:
        assert OPENAI_MIN_LOGPROB <= entry.logprob <= 0
        assert len(entry.top_logprobs) == top
        assert all(OPENAI_MIN_LOGPROB <= alternative.logprob <= 0 for alternative in entry.top_logprobs)
        if top:
            assert math.isclose(entry.top_logprobs[0].logprob, entry.logprob, abs_tol=1e-4), entry


def test_chat_streaming(client: OpenAI) -> None:
    """From vLLM's ``test_chat.py::test_chat_streaming``: at temperature 0 the streamed deltas join into the plain
    answer, every role a delta names is ``assistant``, and the finish reason comes once, with the last content, in
    the last chunk. Adapted: chatloop's first chunk must carry the role (OpenAI's shape), which vLLM's test allows
    but does not require."""
    kwargs: dict[str, Any] = dict(model="chatloop", messages=SESSION, max_completion_tokens=10, temperature=0)
    plain = client.chat.completions.create(**kwargs).choices[0]
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    choices = [chunk.choices[0] for chunk in chunks]
    assert choices[0].delta.role == "assistant"
    assert {choice.delta.role for choice in choices} <= {"assistant", None}
    assert [i for i, choice in enumerate(choices) if choice.finish_reason is not None] == [len(choices) - 1]
    assert choices[-1].finish_reason == plain.finish_reason == "length"
    assert choices[-1].delta.content, "the finish reason came in a chunk of its own, not with the last content"
    assert "".join(choice.delta.content or "" for choice in choices) == plain.message.content


def test_chat_stream_options(client: OpenAI) -> None:
    """From vLLM's ``test_chat.py::test_chat_completion_stream_options``: without ``include_usage`` no chunk has
    usage; with it, no chunk has usage until one more chunk after the finish reason, which has no choices and usage
    that adds up; ``stream_options`` without ``stream`` is a 400. Skipped: ``continuous_usage_stats`` and
    ``min_characters`` (vLLM's own, not offered)."""
    kwargs: dict[str, Any] = dict(model="chatloop", messages=SESSION, max_completion_tokens=5, temperature=0)
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        client.chat.completions.create(**kwargs, stream_options={"include_usage": True})
    without = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": False}))
    assert without and all(chunk.usage is None for chunk in without)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    *answer, last = chunks
    assert all(chunk.usage is None and len(chunk.choices) == 1 for chunk in answer)
    assert answer[-1].choices[0].finish_reason is not None, "the usage chunk must follow the finish reason at once"
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens > 0 and last.usage.completion_tokens == 5
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def test_extra_fields_in_a_message_are_ignored(client: OpenAI) -> None:
    """From vLLM's ``test_chat.py::test_extra_fields_allowed``: a message with a field OpenAI does not define is
    answered, not refused. Adapted: the answer must be exactly the one to the message without that field (greedy),
    so the field is ignored rather than rendered into the prompt."""
    asked = [{"role": "user", "content": "What is 1+1?"}]
    with_extra = [{**asked[0], "extra_field": "0"}]
    answers = [
        client.chat.completions.create(model="chatloop", messages=messages, max_tokens=5, temperature=0)
        for messages in (with_extra, asked)
    ]
    assert answers[0].choices[0].message.content == answers[1].choices[0].message.content
    assert answers[0].usage.prompt_tokens == answers[1].usage.prompt_tokens


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_too_many_logprobs_is_a_bad_request(client: OpenAI, endpoint: str) -> None:
    """From vLLM's ``test_chat.py::test_too_many_chat_logprobs`` and
    ``test_completion.py::test_too_many_completion_logprobs``: asking for more than 20 alternatives (vLLM's
    default ``max_logprobs``, chatloop's ``CHATLOOP_MAX_TOP_LOGPROBS``) is a 400, streamed or not, and the server
    answers the next request. Adapted: chatloop refuses before the stream starts, so the SDK raises at once."""

    def ask(top: int | None, stream: bool = False) -> Any:
        if endpoint == "chat":
            extra = {"logprobs": True, "top_logprobs": top} if top is not None else {}
            return client.chat.completions.create(
                model="chatloop", messages=SESSION, max_tokens=5, temperature=0, stream=stream, **extra
            )
        extra = {"logprobs": top} if top is not None else {}
        return client.completions.create(
            model="chatloop", prompt=COUNTING, max_tokens=5, temperature=0, stream=stream, **extra
        )

    with pytest.raises(openai.BadRequestError) as streamed:
        list(ask(21, stream=True))
    assert streamed.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as plain:
        ask(30)
    assert plain.value.status_code == 400
    answer = ask(None)
    assert answer.choices and answer.usage.completion_tokens > 0


# ---- text completions (vLLM: tests/entrypoints/openai/completion/test_completion.py) -------------------------------


def test_single_completion(server: ServerHandle, client: OpenAI) -> None:
    """From vLLM's ``test_completion.py::test_single_completion``: one choice, ``length`` at ``max_tokens``, usage
    that adds up, for a text prompt and for token ids. Adapted: the prompt count is ``/tokenize``'s (vLLM's 6 is its
    model's), the text must not be empty (vLLM's "at least 5 characters" is its model's), and chatloop has no
    ``prompt_tokens_details`` or ``prompt_logprobs`` to check."""
    completion = client.completions.create(model="chatloop", prompt=COUNTING, max_tokens=5, temperature=0)
    assert completion.id.startswith("cmpl-") and completion.object == "text_completion"
    assert completion.choices is not None and len(completion.choices) == 1
    (choice,) = completion.choices
    assert choice.index == 0 and choice.text and choice.finish_reason == "length"
    prompt = token_count(server, {"prompt": COUNTING})
    assert usage_triple(completion.usage) == (prompt, 5, prompt + 5)
    with server.http() as http:
        ids = http.post("/tokenize", json={"model": "chatloop", "prompt": COUNTING}).json()["tokens"]
    by_ids = client.completions.create(model="chatloop", prompt=ids, max_tokens=5, temperature=0)
    assert by_ids.choices[0].text and usage_triple(by_ids.usage) == (len(ids), 5, len(ids) + 5)


@pytest.mark.parametrize("logprobs", [None, 0, 5], ids=["none", "zero", "five"])
def test_completion_logprobs_shapes(client: OpenAI, logprobs: int | None) -> None:
    """From vLLM's ``test_completion.py::test_no_logprobs``, ``test_zero_logprobs`` and ``test_some_logprobs`` (no
    ``logprobs`` without asking; the chosen token among the alternatives, with up to N others), with the list lengths
    that ``test_echo_logprob_completion`` checks (``tokens``, ``token_logprobs``, ``top_logprobs``,
    ``text_offset``). Adapted: without ``echo`` (chatloop refuses it with ``logprobs``) every list has one entry per
    generated token and the offsets count from 0; greedy, so the chosen token is the first of the N."""
    completion = client.completions.create(
        model="chatloop", prompt=COUNTING, max_tokens=5, temperature=0, logprobs=logprobs
    )
    choice = completion.choices[0]
    if logprobs is None:
        assert choice.logprobs is None
        return
    scored = choice.logprobs
    generated = completion.usage.completion_tokens
    assert len(scored.tokens) == len(scored.token_logprobs) == len(scored.top_logprobs) == generated == 5
    assert len(scored.text_offset) == generated and "".join(scored.tokens) == choice.text
    assert scored.text_offset == [sum(len(token) for token in scored.tokens[:i]) for i in range(generated)]
    for token, logprob, alternatives in zip(scored.tokens, scored.token_logprobs, scored.top_logprobs, strict=True):
        assert alternatives[token] == logprob and len(alternatives) == max(logprobs, 1)
        assert OPENAI_MIN_LOGPROB <= logprob <= 0


def test_completion_streaming(client: OpenAI) -> None:
    """From vLLM's ``test_completion.py::test_completion_streaming`` and ``test_completion_stream_options``: at
    temperature 0 the streamed texts join into the plain completion, the finish reason (``length``) comes once, in
    the last choice chunk, with text; with ``include_usage`` only one more chunk follows, with no choices and usage
    that adds up. Skipped: ``continuous_usage_stats`` (vLLM's own)."""
    kwargs: dict[str, Any] = dict(model="chatloop", prompt=COUNTING, max_tokens=5, temperature=0)
    plain = client.completions.create(**kwargs)
    chunks = list(client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    *answer, last = chunks
    choices = [chunk.choices[0] for chunk in answer]
    assert all(len(chunk.choices) == 1 and chunk.usage is None for chunk in answer)
    assert [i for i, choice in enumerate(choices) if choice.finish_reason is not None] == [len(choices) - 1]
    assert choices[-1].finish_reason == "length" and choices[-1].text
    assert "".join(choice.text for choice in choices) == plain.choices[0].text
    assert last.choices == [] and usage_triple(last.usage) == usage_triple(plain.usage)


def test_streamed_text_offsets_match_the_whole_answers(client: OpenAI) -> None:
    """From vLLM's ``test_completion_text_offset.py::test_stream_text_offset_matches_non_stream_with_stop_holdback``:
    a streamed answer's ``text_offset`` values are the plain answer's, even with a stop string, for which the engine
    holds back the text that might begin it while the tokens run ahead. Adapted: a real greedy answer through the
    server rather than hand-made engine outputs; the stop string (vLLM's) is one the counting never writes."""
    kwargs: dict[str, Any] = dict(
        model="chatloop", prompt=COUNTING, max_tokens=8, temperature=0, logprobs=1, stop=["\n\n"]
    )
    whole = client.completions.create(**kwargs).choices[0].logprobs
    chunks = [chunk.choices[0] for chunk in client.completions.create(**kwargs, stream=True) if chunk.choices]
    assert [token for chunk in chunks for token in chunk.logprobs.tokens] == whole.tokens
    assert [offset for chunk in chunks for offset in chunk.logprobs.text_offset] == whole.text_offset


def test_parallel_completions(client: OpenAI) -> None:
    """From vLLM's ``test_completion.py::test_parallel_no_streaming`` and ``test_parallel_streaming``: ``n``
    choices, each at its own index with a finish reason; streamed, each chunk holds one choice, every choice
    finishes once, and none sends more chunks than ``max_tokens``. Adapted: 6 tokens rather than 50, and vLLM's
    checks that the samples differ and end at different lengths are left out (chance, at so few tokens)."""
    n, limit = 3, 6
    kwargs: dict[str, Any] = dict(model="chatloop", prompt=COUNTING, max_tokens=limit, n=n, temperature=1.0, seed=42)
    completion = client.completions.create(**kwargs, logprobs=0)
    assert [choice.index for choice in completion.choices] == list(range(n))
    assert all(choice.finish_reason in ("stop", "length") for choice in completion.choices)
    lengths = [len(choice.logprobs.tokens) for choice in completion.choices]
    assert all(1 <= length <= limit for length in lengths)
    assert sum(lengths) == completion.usage.completion_tokens, "usage counts every choice's tokens"
    chunks = list(client.completions.create(**kwargs, stream=True))
    assert all(len(chunk.choices) == 1 for chunk in chunks)
    per_choice = {index: [c.choices[0] for c in chunks if c.choices[0].index == index] for index in range(n)}
    assert sum(len(choices) for choices in per_choice.values()) == len(chunks), "a chunk for a choice not asked for"
    for choices in per_choice.values():
        assert 1 <= len(choices) <= limit
        assert [choice.finish_reason is not None for choice in choices] == [False] * (len(choices) - 1) + [True]


@pytest.mark.parametrize("form", ["text", "token ids"])
def test_echo_returns_the_prompt_and_the_answer(server: ServerHandle, client: OpenAI, form: str) -> None:
    """From vLLM's ``test_completion.py::test_echo_logprob_completion``: with ``echo`` the text begins with the
    prompt, given as text or as token ids (decoded). Adapted: without ``logprobs``, which chatloop refuses with
    ``echo``; and the rest must be exactly the greedy answer without ``echo``."""
    with server.http() as http:
        ids = http.post("/tokenize", json={"model": "chatloop", "prompt": COUNTING}).json()["tokens"]
        decoded = http.post("/detokenize", json={"model": "chatloop", "tokens": ids}).json()["prompt"]
    prompt, prompt_text = (COUNTING, COUNTING) if form == "text" else (ids, decoded)
    kwargs: dict[str, Any] = dict(model="chatloop", prompt=prompt, max_tokens=5, temperature=0)
    echoed = client.completions.create(**kwargs, echo=True).choices[0]
    plain = client.completions.create(**kwargs).choices[0]
    assert echoed.text.startswith(prompt_text) and plain.text
    assert echoed.text == prompt_text + plain.text


# ---- responses (vLLM: tests/entrypoints/openai/responses/) ---------------------------------------------------------


def test_response_cut_at_max_output_tokens_is_incomplete(client: OpenAI) -> None:
    """From vLLM's ``responses/test_simple.py::test_max_tokens`` (an answer cut by ``max_output_tokens`` is
    ``incomplete`` for that reason) and ``test_basic.py::test_chat_with_input_type`` (a message of ``input_text``
    parts is answered). Adapted: 5 tokens rather than 30, no ``reasoning`` (refused, the model has none), and the
    message answer, ``output_text`` and usage that adds up are checked as well."""
    response = client.responses.create(
        model="chatloop",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Tell me a long story about a cat."}]}],
        max_output_tokens=5,
        temperature=0,
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output[-1].type == "message" and response.output_text
    assert response.output[-1].content[0].text == response.output_text
    usage = response.usage
    assert usage.input_tokens > 0 and usage.output_tokens == 5
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


ITEM_PAIRS = {
    "response.output_item.done": "response.output_item.added",
    "response.content_part.done": "response.content_part.added",
    "response.output_text.done": "response.output_text.delta",
}
"""Each event that closes a part of a streamed response → the event that opened it (vLLM's pairs, less the kinds of
output chatloop has no use for: reasoning, MCP, code interpreter, web search)."""
FINAL_EVENTS = ("response.completed", "response.incomplete")


def assert_items_nest(events: list[Any]) -> None:
    """The events between ``response.in_progress`` and the final one: every part opened is closed, innermost first
    (a run of deltas counts as one opening), and each event of an output item names the id and place that its
    ``response.output_item.added`` gave it."""
    opened: list[str] = []
    item: tuple[str, int] | None = None
    for event in events:
        if event.type in ITEM_PAIRS:
            assert opened and opened[-1] == ITEM_PAIRS[event.type], f"{event.type} closes {opened}"
            opened.pop()
        elif event.type in ITEM_PAIRS.values() and not (event.type.endswith(".delta") and opened[-1:] == [event.type]):
            opened.append(event.type)
        if event.type == "response.output_item.added":
            item = (event.item.id, event.output_index)
        elif event.type == "response.output_item.done":
            assert (event.item.id, event.output_index) == item, event
            item = None
        else:
            assert item is not None, f"{event.type} outside any output item"
            assert (event.item_id, event.output_index) == item, event
    assert opened == [], f"left open: {opened}"


def test_response_stream_events_nest_and_add_up(client: OpenAI) -> None:
    """From vLLM's ``responses/test_simple.py::test_streaming_types`` (the checks of its conftest's
    ``validate_streaming_event_stack``: ``response.created`` first, ``response.in_progress`` second, one final event
    last, every opened part closed in order, the events of an item naming its id and place) and
    ``test_streaming_output_consistency`` (the text deltas join into the final response's ``output_text``). Adapted:
    cut at 10 tokens, the final event is ``response.incomplete``, which chatloop sends where vLLM's test waits for
    ``response.completed``; either way it must name the final response's status."""
    events = list(
        client.responses.create(
            model="chatloop",
            input="Tell me a long story about a cat.",
            max_output_tokens=10,
            temperature=0,
            stream=True,
        )
    )
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types.count("response.created") == 1
    assert [t for t in types if t in FINAL_EVENTS] == [types[-1]], types
    final = events[-1].response
    assert types[-1] == f"response.{final.status}"
    assert_items_nest(events[2:-1])
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text and text == final.output_text
    if final.status == "incomplete":
        assert final.usage.output_tokens == 10 and final.incomplete_details.reason == "max_output_tokens"
