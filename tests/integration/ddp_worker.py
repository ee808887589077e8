"""The trainer's stages on every process of an ``accelerate launch``, for test_trainer_distributed.py.

Each process trains the reward model, runs the supervised and preference stages and one PPO update on its share
of the prompts, in the round's order, and saves what it ended with to ``<out>/rank<i>.pt``; the test compares the
processes. Some lists do not split evenly (3 items over 2 processes), so that padded shares are exercised too.

    accelerate launch --multi_gpu --num_processes 2 -m tests.integration.ddp_worker MODEL_DIR OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from core.config import PPOSettings, PreferenceSettings, RewardSettings, SupervisedSettings, ToolSettings
from tests.factories import short_over_long_pair
from trainer.chat_text import Prompt
from trainer.distributed import get_accelerator, process_share
from trainer.dpo import References, preference_stage
from trainer.gate import evaluate_policy
from trainer.models import load_policy, load_tokenizer
from trainer.ppo import PPOTrainer
from trainer.reward import train_reward_model
from trainer.sft import chosen_example, supervised_stage

TOPICS = ["the sea", "a cat", "bread", "rain", "music", "the moon", "a river", "winter and its long nights"]
PPO = PPOSettings(batch_prompts=4, max_new_tokens=6, epochs=1, minibatch_size=4, learning_rate=1e-2, advantage="critic")
"""With a critic: its value head must be averaged across the processes too."""
SUPERVISED = SupervisedSettings(epochs=1, learning_rate=1e-2)
PREFERENCE = PreferenceSettings(epochs=1, learning_rate=1e-2)
"""Large learning rates: every update must move the weights of a random model visibly."""


def prompt_reward(prompts: list[list[dict]], answers: list[str], ended: list[bool]) -> torch.Tensor:
    """Depends on the prompt, so that processes answering different prompts see different rewards."""
    return torch.tensor(
        [len(p.messages[-1]["content"]) / 10 - len(a) / 100 for p, a in zip(prompts, answers, strict=True)]
    )


def trainable(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in module.named_parameters() if p.requires_grad}


def main(model: Path, out: Path) -> None:
    accelerator = get_accelerator()
    pairs = [short_over_long_pair(i, weight=1.0 if i % 2 else 0.5) for i in range(7)]
    reward_settings = RewardSettings(epochs=1, top_layers=1, batch_size=3, max_length=64, held_out_share=0.3)
    reward_model, reward_metrics = train_reward_model(
        model, pairs[:5], pairs[5:], reward_settings, ToolSettings(), seed=0
    )

    torch.manual_seed(0)
    tokenizer = load_tokenizer(model, ToolSettings())
    ppo = PPOTrainer(load_policy(model, None, PPO), tokenizer, prompt_reward, PPO, seed=0)
    prompts = [Prompt.asking(f"Tell me about {topic}.") for topic in TOPICS]
    initial = trainable(ppo.policy)
    parent_eval = evaluate_policy(ppo, prompts[:3], seed=0)
    sft_losses = supervised_stage(ppo.policy, [chosen_example(tokenizer, p) for p in pairs[:3]], SUPERVISED, PPO, 0)
    after_sft = trainable(ppo.policy)
    dpo_losses = preference_stage(ppo.policy, tokenizer, pairs[3:6], PREFERENCE, PPO, seed=0, references=References())
    after_dpo = trainable(ppo.policy)
    rollout = ppo.rollout(process_share(prompts[:4]).items)
    stats = ppo.step(rollout)
    torch.save(
        {
            "processes": accelerator.num_processes,
            "reward_model": trainable(reward_model),
            "reward_metrics": reward_metrics.model_dump(),
            "initial": initial,
            "after_sft": after_sft,
            "after_dpo": after_dpo,
            "final": trainable(ppo.policy),
            "value_head": trainable(ppo.unwrapped.value_head),
            "sft_losses": sft_losses,
            "dpo_losses": dpo_losses,
            "local_reward": rollout.scores.mean().item(),
            "stats": stats,
            "parent_eval": parent_eval.model_dump(),
            "candidate_eval": evaluate_policy(ppo, prompts[:3], seed=0).model_dump(),
        },
        out / f"rank{accelerator.process_index}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
