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

from core.config import PPOSettings, PreferenceSettings
from feedback.pairs import Pair
from trainer.chat_text import Prompt
from trainer.finetune import IGNORE, answer_example, answer_logprobs, run_epochs
from trainer.losses import dpo_loss
from trainer.progress import progress


class References:
    """The reference's summed log-probabilities of each pair's chosen and rejected answer, by pair id, kept from
    round to round by the trainer process: for one base model only.

    The reference is the base model, which does not change while the trainer runs, and most of a round's pairs were
    in an earlier round (``trainer/data.py: round_pairs``), so a round need score only its new pairs under it. An
    entry is two numbers: a long run's thousands of pairs take a few hundred kilobytes.
    """

    def __init__(self) -> None:
        self._by_pair: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._by_pair)

    @torch.no_grad()
    def of(
        self, policy: PeftModel, pair_id: str, ids: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        if pair_id not in self._by_pair:
            policy.eval()
            with policy.disable_adapter():
                self._by_pair[pair_id] = answer_logprobs(policy, ids, attention, labels)
        return self._by_pair[pair_id]


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


def pair_tensors(tokenizer: PreTrainedTokenizerBase, pair: Pair) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids, attention and labels of a pair's chosen (row 0) and rejected (row 1) conversation, right-padded."""
    prompt = Prompt.of_pair(pair)
    examples = [answer_example(tokenizer, prompt, answer) for answer in (pair.chosen, pair.rejected)]
    ids = _padded([ids for ids, _ in examples], tokenizer.pad_token_id)
    attention = _padded([torch.ones_like(ids) for ids, _ in examples], 0)
    labels = _padded([labels for _, labels in examples], IGNORE)
    return ids, attention, labels


def pair_batch(policy: PeftModel, tokenizer: PreTrainedTokenizerBase, pair: Pair, references: References) -> PairBatch:
    ids, attention, labels = pair_tensors(tokenizer, pair)
    reference = references.of(policy, pair.pair_id, ids, attention, labels)
    return PairBatch(ids, attention, labels, reference, pair.weight)


def preference_stage(
    policy: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[Pair],
    settings: PreferenceSettings,
    updates: PPOSettings,
    seed: int,
    references: References,
) -> list[float]:
    """Mean weighted loss of each epoch."""
    batches = [pair_batch(policy, tokenizer, pair, references) for pair in progress(pairs, "preference stage: pairs")]

    def loss_of(model: torch.nn.Module, batch: PairBatch) -> torch.Tensor:
        chosen, rejected = answer_logprobs(model, batch.ids, batch.attention, batch.labels)
        return batch.weight * dpo_loss(chosen, rejected, batch.reference[0], batch.reference[1], settings.beta)

    return run_epochs(policy, batches, loss_of, settings, updates, seed, "preference stage")
