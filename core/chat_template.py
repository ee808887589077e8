"""The chat template of conversations with tools, which the server and the trainer must share.

A conversation with tools (given to the model, or calls and their results in its messages) is written out by the
tool template (ChatML with Hermes-format calls, shipped for the default model's family, or the model's own where
``TOOLS__CHAT_TEMPLATE`` names it); any other by the model's own template. The server renders what the engine reads
with it, and the trainer what it learns from: rendered apart, the trainer would teach answers to prompts the model
never saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

SHIPPED_TOOL_TEMPLATE = Path(__file__).resolve().parent / "templates" / "chatml_tools.jinja"


@cache
def tool_template(path: Path | None) -> str:
    return (path or SHIPPED_TOOL_TEMPLATE).read_text()


def involves_tools(messages: Sequence[Mapping[str, Any]], tools: Sequence[object] | None) -> bool:
    """Whether the tool template renders this conversation: tools were given, or its messages hold calls or
    results."""
    return bool(tools) or any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)
