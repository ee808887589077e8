"""Gradient steps on the policy's adapter over examples of conversations ending in an answer: what the supervised
stage (``trainer/sft.py``) and the preference stage (``trainer/dpo.py``) share.

Under ``accelerate launch`` each process takes its share of every minibatch, weighted so that DDP's average of the
processes' gradients is the minibatch's gradient, as one process would compute it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import TypeVar

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from core.config import FinetuneSettings, PPOSettings
from feedback.pairs import PairAnswer
from trainer.chat_text import Prompt, conversation_text, prompt_text
from trainer.distributed import get_accelerator, mean_across_processes, process_share
from trainer.losses import token_logprobs
from trainer.progress import progress

IGNORE = -100

Example = tuple[torch.Tensor, torch.Tensor]
"""Token ids ``[1, L]`` of a conversation ending in an answer, and its labels: the ids, ``IGNORE`` before the answer."""

Item = TypeVar("Item")


def answer_example(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, answer: PairAnswer) -> Example:
    """The conversation as the policy saw it and the answer as the engine wrote it (``trainer/chat_text.py``)."""
    full_text = conversation_text(tokenizer, prompt, answer.text, answer.ended)
    ids = tokenizer(full_text, return_tensors="pt", add_special_tokens=False).input_ids.to(get_accelerator().device)
    labels = ids.clone()
    labels[:, : len(tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False).input_ids)] = IGNORE
    return ids, labels


def answer_logprobs(
    model: torch.nn.Module, ids: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Per row, the summed log-probability of the answer's tokens (those whose label is not ``IGNORE``)."""
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    targets = labels[:, 1:]
    answer = targets != IGNORE
    return (token_logprobs(logits, targets.clamp(min=0)) * answer).sum(dim=1)


def run_epochs(
    policy: PeftModel,
    items: Sequence[Item],
    loss_of: Callable[[torch.nn.Module, Item], torch.Tensor],
    stage: FinetuneSettings,
    updates: PPOSettings,
    seed: int,
    desc: str,
) -> list[float]:
    """Mean loss of each epoch; gradients accumulate over PPO's ``minibatch_size`` items (on all processes
    together) and are clipped as PPO's are. Every process passes the same items; ``desc`` names the progress bar."""
    accelerator = get_accelerator()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    model, optimizer = accelerator.prepare(policy, torch.optim.AdamW(trainable, lr=stage.learning_rate))
    items = list(items)
    rng = random.Random(seed)
    model.train()
    losses = []
    for epoch in range(stage.epochs):
        rng.shuffle(items)
        total = 0.0
        for start in progress(range(0, len(items), updates.minibatch_size), f"{desc} epoch {epoch + 1}/{stage.epochs}"):
            batch = items[start : start + updates.minibatch_size]
            share = process_share(batch)
            optimizer.zero_grad()
            for i, item in enumerate(share.items):
                weight = accelerator.num_processes if i < share.real else 0
                # Gradients are all-reduced once, at the share's last backward pass.
                with accelerator.no_sync(model) if i + 1 < len(share.items) else nullcontext():
                    loss = loss_of(model, item) / len(batch)
                    accelerator.backward(loss * weight)
                total += loss.item() * len(batch) * weight
            accelerator.clip_grad_norm_(trainable, updates.max_grad_norm)
            optimizer.step()
        losses.append(mean_across_processes({"loss": total / max(len(items), 1)})["loss"])
    return losses
