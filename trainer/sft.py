"""The optional supervised stage before PPO: fine-tune the adapter on the answers users chose (and, with
``CHATLOOP_SUPERVISED__BEST_OF``, on the policy's own best-of-n answers: ``trainer/best_of.py``).

InstructGPT's first stage, done online: next-token cross-entropy on the chosen answer of each pair, the prompt's
tokens excluded from the loss. Off by default since 2026-12-03: the preference stage (``trainer/dpo.py``) learns
from both answers of a pair and taught the closed loop's users' preferences faster (docs/benchmarks.md, "Closed loop").
``CHATLOOP_SUPERVISED__EPOCHS=1`` turns it on, before the preference stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from core.config import PPOSettings, SupervisedSettings
from feedback.pairs import Pair
from trainer.chat_text import Prompt
from trainer.finetune import Example, answer_example, run_epochs


def chosen_example(tokenizer: PreTrainedTokenizerBase, pair: Pair) -> Example:
    return answer_example(tokenizer, Prompt.of_pair(pair), pair.chosen)


def _cross_entropy(model: torch.nn.Module, example: Example) -> torch.Tensor:
    ids, labels = example
    return model(input_ids=ids, labels=labels).loss


def supervised_stage(
    policy: PeftModel, examples: Sequence[Example], settings: SupervisedSettings, updates: PPOSettings, seed: int
) -> list[float]:
    """Mean loss of each epoch."""
    return run_epochs(policy, examples, _cross_entropy, settings, updates, seed, "supervised stage")
