"""The optional supervised stage before PPO: fine-tune the adapter on the answers users chose.

InstructGPT's first stage, done online: next-token cross-entropy on the chosen answer of each pair, the prompt's
tokens excluded from the loss. Off by default (``CHATLOOP_PPO__SFT_EPOCHS=0``): PPO alone learns from the same
pairs through the reward model, and imitation of a small model's own answers mostly sharpens what it already does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from core.config import PPOSettings
from feedback.pairs import Pair
from trainer.device import DEVICE

IGNORE = -100


def _example(tokenizer: PreTrainedTokenizerBase, pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
    prompt = [m.model_dump() for m in pair.prompt]
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": pair.chosen.text}], tokenize=False
    )
    ids = tokenizer(full_text, return_tensors="pt", add_special_tokens=False).input_ids.to(DEVICE)
    labels = ids.clone()
    labels[:, : len(tokenizer(prompt_text, add_special_tokens=False).input_ids)] = IGNORE
    return ids, labels


def supervised_stage(
    policy: PeftModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[Pair], settings: PPOSettings, seed: int
) -> list[float]:
    """Mean loss of each epoch; gradients accumulate over ``minibatch_size`` examples."""
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate)
    examples = [_example(tokenizer, pair) for pair in pairs]
    rng = random.Random(seed)
    policy.train()
    losses = []
    for _ in range(settings.sft_epochs):
        rng.shuffle(examples)
        total = 0.0
        for start in range(0, len(examples), settings.minibatch_size):
            batch = examples[start : start + settings.minibatch_size]
            optimizer.zero_grad()
            for ids, labels in batch:
                loss = policy(input_ids=ids, labels=labels).loss / len(batch)
                loss.backward()
                total += loss.item() * len(batch)
            torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
            optimizer.step()
        losses.append(total / max(len(examples), 1))
    return losses
