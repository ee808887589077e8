"""The optional supervised stage before PPO: fine-tune the adapter on the answers users chose (and, with
``CHATLOOP_PPO__BEST_OF``, on the policy's own best-of-n answers: ``trainer/best_of.py``).

InstructGPT's first stage, done online: next-token cross-entropy on the chosen answer of each pair, the prompt's
tokens excluded from the loss. One epoch by default, as in the closed-loop runs that met their target
(docs/benchmarks.md): imitating the chosen answers is the most direct signal a round has, while PPO through the
reward model generalises it to new prompts. ``CHATLOOP_PPO__SFT_EPOCHS=0`` leaves PPO alone.

Under ``accelerate launch`` each process takes its share of every minibatch, weighted so that DDP's average of the
processes' gradients is the minibatch's gradient, as one process would compute it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import nullcontext

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from core.config import PPOSettings
from feedback.pairs import Pair
from trainer.distributed import get_accelerator, mean_across_processes, process_share

IGNORE = -100

Example = tuple[torch.Tensor, torch.Tensor]
"""Token ids ``[1, L]`` of a conversation ending in an answer, and its labels: the ids, ``IGNORE`` before the answer."""


def chosen_example(tokenizer: PreTrainedTokenizerBase, pair: Pair) -> Example:
    prompt = [m.model_dump() for m in pair.prompt]
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": pair.chosen.text}], tokenize=False
    )
    ids = tokenizer(full_text, return_tensors="pt", add_special_tokens=False).input_ids.to(get_accelerator().device)
    labels = ids.clone()
    labels[:, : len(tokenizer(prompt_text, add_special_tokens=False).input_ids)] = IGNORE
    return ids, labels


def supervised_stage(policy: PeftModel, examples: Sequence[Example], settings: PPOSettings, seed: int) -> list[float]:
    """Mean loss of each epoch; gradients accumulate over ``minibatch_size`` examples (on all processes together).
    Every process passes the same examples."""
    accelerator = get_accelerator()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    model, optimizer = accelerator.prepare(policy, torch.optim.AdamW(trainable, lr=settings.learning_rate))
    examples = list(examples)
    rng = random.Random(seed)
    model.train()
    losses = []
    for _ in range(settings.sft_epochs):
        rng.shuffle(examples)
        total = 0.0
        for start in range(0, len(examples), settings.minibatch_size):
            batch = examples[start : start + settings.minibatch_size]
            share = process_share(batch)
            optimizer.zero_grad()
            for i, (ids, labels) in enumerate(share.items):
                weight = accelerator.num_processes if i < share.real else 0
                # Gradients are all-reduced once, at the share's last backward pass.
                with accelerator.no_sync(model) if i + 1 < len(share.items) else nullcontext():
                    loss = model(input_ids=ids, labels=labels).loss / len(batch)
                    accelerator.backward(loss * weight)
                total += loss.item() * len(batch) * weight
            accelerator.clip_grad_norm_(trainable, settings.max_grad_norm)
            optimizer.step()
        losses.append(mean_across_processes({"loss": total / max(len(examples), 1)})["loss"])
    return losses
