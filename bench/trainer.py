"""Trainer cost on this machine: reward-model pairs per second, PPO seconds per rollout batch, peak memory.

Synthetic pairs (a short answer preferred to a long one) and a length reward stand in for users, so the figures
depend only on the model and the settings, which are printed with them. No Redis is needed:

    .venv/bin/python bench/trainer.py [--pairs 64] [--batches 2]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
from report import default_out, figure_table, write_results

from core.config import Settings
from tests.factories import short_over_long_pair
from trainer.chat_text import Prompt
from trainer.data import split_held_out
from trainer.models import load_policy, load_tokenizer
from trainer.ppo import PPOTrainer
from trainer.reward import train_reward_model
from trainer.sampling import Sampling


def peak_memory_mib() -> dict[str, float]:
    peaks = {"cpu_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peaks["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batches", type=int, default=2, help="PPO rollout batches to time")
    parser.add_argument("--out", type=Path, default=default_out("trainer"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    torch.manual_seed(0)

    pairs = [short_over_long_pair(i) for i in range(args.pairs)]
    started = time.perf_counter()
    train, held_out = split_held_out(pairs, settings.reward.held_out_share)
    _, reward_metrics = train_reward_model(
        settings.model_path, train, held_out, settings.reward, settings.tools, seed=0
    )
    reward_seconds = time.perf_counter() - started
    trained_pairs = reward_metrics.train_pairs * settings.reward.epochs

    ppo_settings = settings.ppo
    policy = load_policy(settings.model_path, None, ppo_settings)
    reward = lambda prompts, answers, ended: torch.tensor([-len(a.split()) / 20 for a in answers])  # noqa: E731
    sampling = Sampling.of(ppo_settings)
    trainer = PPOTrainer(
        policy, load_tokenizer(settings.model_path, settings.tools), reward, ppo_settings, seed=0, sampling=sampling
    )
    prompts = [Prompt.of_pair(p) for p in pairs][: ppo_settings.batch_prompts]
    rollout_s, step_s = [], []
    for _ in range(args.batches):
        started = time.perf_counter()
        rollout = trainer.rollout(prompts, samples=ppo_settings.samples_per_prompt)
        rollout_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        trainer.step(rollout)
        step_s.append(time.perf_counter() - started)

    results = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "reward_model": {
            "pairs_per_s": trained_pairs / reward_seconds,
            "seconds": reward_seconds,
            **reward_metrics.model_dump(),
        },
        "ppo": {
            "rollout_s": rollout_s,
            "update_s": step_s,
            "batch_prompts": ppo_settings.batch_prompts,
            "samples_per_prompt": ppo_settings.samples_per_prompt,
            "max_new_tokens": sampling.max_new_tokens,
            "epochs": ppo_settings.epochs,
        },
        "peak_memory": peak_memory_mib(),
        "settings": {"reward": settings.reward.model_dump(), "ppo": ppo_settings.model_dump()},
    }
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    reward, ppo = settings.reward, ppo_settings
    table = figure_table(
        [
            (
                f"reward model: pairs/s (train, {reward.epochs} epochs, LoRA on top {reward.top_layers} layers)",
                f"{results['reward_model']['pairs_per_s']:.2f}",
            ),
            ("reward model: held-out accuracy on the synthetic preference", str(reward_metrics.held_out_accuracy)),
            (
                f"PPO: rollout s per batch ({ppo.batch_prompts} prompts x {ppo.samples_per_prompt} answers x "
                f"{sampling.max_new_tokens} tokens, with reference and reward)",
                f"{mean(rollout_s):.1f}",
            ),
            (f"PPO: update s per batch ({ppo.epochs} epochs, minibatch {ppo.minibatch_size})", f"{mean(step_s):.1f}"),
            ("peak memory MiB", str(results["peak_memory"])),
        ]
    )
    write_results(args.out, args, results, table)


if __name__ == "__main__":
    main()
