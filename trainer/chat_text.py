"""A conversation written out as the models read it: the chat template, with the answer as the engine wrote it.

An answer that ran into its token limit gets no end-of-turn token, which the chat template would add. It did not
end there: an example saying it did would teach the policy to stop mid-sentence, and a reward model shown a cut-off
answer as finished could not see what its user saw, that the answer broke off.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase


def prompt_text(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict]) -> str:
    """The conversation up to where the assistant's answer starts."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def conversation_text(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict], answer: str, ended: bool) -> str:
    """The conversation with its answer, closed by the end-of-turn token only when the answer ``ended``."""
    if not ended:
        return prompt_text(tokenizer, messages) + answer
    return tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": answer}], tokenize=False)
