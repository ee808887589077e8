"""The optional preference stage before PPO: Direct Preference Optimization on the users' pairs
(``trainer/losses.py: dpo_loss``), with the base model as the reference (the adapter switched off, as for PPO's KL
penalty) and each pair weighted by its rule's weight.

Why a round needs more than imitation: the supervised stage's cross-entropy spends its gradient on the chosen
answer's every token, so a difference between the two answers that lies in a few tokens (where an answer ends, how
a sentence is cut) is a small share of what it learns, and the rejected answer teaches it nothing. DPO learns from
the difference of the two answers' log-likelihoods, which is exactly what the user's choice is about. The reward
model and PPO still run after it: they generalise the preference to prompts no pair covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from core.config import PPOSettings
from feedback.pairs import Pair
from trainer.finetune import IGNORE, answer_example, answer_logprobs, run_epochs
from trainer.losses import dpo_loss


@dataclass
class PairBatch:
    """A pair's chosen (row 0) and rejected (row 1) conversation, right-padded, with the reference's summed
    answer log-probabilities."""

    ids: torch.Tensor
    attention: torch.Tensor
    labels: torch.Tensor
    reference: torch.Tensor
    weight: float


def _padded(rows: Sequence[torch.Tensor], value: int) -> torch.Tensor:
    width = max(row.shape[1] for row in rows)
    return torch.cat([torch.nn.functional.pad(row, (0, width - row.shape[1]), value=value) for row in rows])


@torch.no_grad()
def pair_batch(policy: PeftModel, tokenizer: PreTrainedTokenizerBase, pair: Pair) -> PairBatch:
    examples = [answer_example(tokenizer, pair.prompt, answer) for answer in (pair.chosen, pair.rejected)]
    ids = _padded([ids for ids, _ in examples], tokenizer.pad_token_id)
    attention = _padded([torch.ones_like(ids) for ids, _ in examples], 0)
    labels = _padded([labels for _, labels in examples], IGNORE)
    policy.eval()
    with policy.disable_adapter():
        reference = answer_logprobs(policy, ids, attention, labels)
    return PairBatch(ids, attention, labels, reference, pair.weight)


def preference_stage(
    policy: PeftModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[Pair], settings: PPOSettings, seed: int
) -> list[float]:
    """Mean weighted loss of each epoch."""
    batches = [pair_batch(policy, tokenizer, pair) for pair in pairs]

    def loss_of(model: torch.nn.Module, batch: PairBatch) -> torch.Tensor:
        chosen, rejected = answer_logprobs(model, batch.ids, batch.attention, batch.labels)
        return batch.weight * dpo_loss(chosen, rejected, batch.reference[0], batch.reference[1], settings.dpo_beta)

    return run_epochs(policy, batches, loss_of, settings.dpo_epochs, settings, seed)
