"""The optional supervised stage before PPO: fine-tune the adapter on the answers users chose (and, with
``CHATLOOP_PPO__BEST_OF``, on the policy's own best-of-n answers: ``trainer/best_of.py``).

InstructGPT's first stage, done online: next-token cross-entropy on the chosen answer of each pair, the prompt's
tokens excluded from the loss. One epoch by default, as in the closed-loop runs that met their target
(docs/benchmarks.md): imitating the chosen answers is the most direct signal a round has, while PPO through the
reward model generalises it to new prompts. ``CHATLOOP_PPO__SFT_EPOCHS=0`` leaves PPO alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from core.config import PPOSettings
from feedback.pairs import Pair
from trainer.finetune import Example, answer_example, run_epochs


def chosen_example(tokenizer: PreTrainedTokenizerBase, pair: Pair) -> Example:
    return answer_example(tokenizer, pair.prompt, pair.chosen)


def _cross_entropy(model: torch.nn.Module, example: Example) -> torch.Tensor:
    ids, labels = example
    return model(input_ids=ids, labels=labels).loss


def supervised_stage(policy: PeftModel, examples: Sequence[Example], settings: PPOSettings, seed: int) -> list[float]:
    """Mean loss of each epoch."""
    return run_epochs(policy, examples, _cross_entropy, settings.sft_epochs, settings, seed)
