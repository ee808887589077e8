"""A conversation written out as the models read it: the chat template, with the answer as the engine wrote it.

A prompt is what the model read before it answered (``Prompt``): the conversation and the tools it was given, written
out by the same template the server used (``core/chat_template.py``; ``trainer/models.py: load_tokenizer`` gives
the tokenizer the tool template as its ``tool_use`` template, which Hugging Face picks whenever ``tools`` are
passed).

An answer that ran into its token limit gets no end-of-turn token, which the chat template would add. It did not
end there: an example saying it did would teach the policy to stop mid-sentence, and a reward model shown a cut-off
answer as finished could not see what its user saw, that the answer broke off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from core.chat_template import involves_tools
from feedback.pairs import Pair


@dataclass(frozen=True)
class Prompt:
    messages: list[dict[str, Any]]
    """In the chat template's shape (``feedback/records.py: RecordedMessage``)."""
    tools: list[dict[str, Any]] | None = None

    @classmethod
    def asking(cls, question: str) -> Prompt:
        return cls([{"role": "user", "content": question}])

    @classmethod
    def of_pair(cls, pair: Pair) -> Prompt:
        return cls([m.model_dump() for m in pair.prompt], pair.tools)

    def template_tools(self) -> list[dict[str, Any]] | None:
        """``tools`` as the template takes them: a list (maybe empty) whenever the tool template renders the
        conversation, so that the tokenizer picks that template; None otherwise."""
        return (self.tools or []) if involves_tools(self.messages, self.tools) else None


def prompt_text(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> str:
    """The conversation up to where the assistant's answer starts."""
    return tokenizer.apply_chat_template(
        prompt.messages, tools=prompt.template_tools(), tokenize=False, add_generation_prompt=True
    )


def conversation_text(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, answer: str, ended: bool) -> str:
    """The conversation with its answer, closed by the end-of-turn token only when the answer ``ended``."""
    if not ended:
        return prompt_text(tokenizer, prompt) + answer
    messages = [*prompt.messages, {"role": "assistant", "content": answer}]
    return tokenizer.apply_chat_template(messages, tools=prompt.template_tools(), tokenize=False)
