"""PPO's rollouts sampled two ways: by the trainer's own ``generate`` and by the serving engine
(``POST /v1/admin/rollouts``, ``trainer/engine_rollouts.py``), with the same adapter, prompts and sampling.

The arms alternate batch by batch on one idle server, so that both see the same machine. The trainer's arm runs on
the cores the engine's worker leaves free, where ``chatloop up`` runs the trainer. Tokens per second count the
answers' tokens (the end-of-sequence token included):

    .venv/bin/python bench/rollouts.py --batches 4
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import torch
from harness import chatloop_command, running
from report import default_out, figure_table, write_results

from client.simulation.prompt_set import load_prompts
from core.config import LOCAL_ADMIN_KEY, Settings
from core.policy import TRAINEES_DIRNAME
from trainer.chat_text import Prompt
from trainer.engine_rollouts import EngineSampler
from trainer.models import load_policy, load_tokenizer
from trainer.ppo import PPOTrainer
from trainer.sampling import Sampling

ARMS = ("trainer", "engine")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=4, help="rollout batches per arm")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per batch (PPO__BATCH_PROMPTS)")
    parser.add_argument("--samples", type=int, default=4, help="answers per prompt (PPO__SAMPLES_PER_PROMPT)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--out", type=Path, default=default_out("rollouts"))
    return parser.parse_args()


def trainee(settings: Settings) -> PPOTrainer:
    """A policy whose adapter is not zero, as it is after a round's first PPO step."""
    torch.manual_seed(0)
    policy = load_policy(settings.model_path, None, settings.ppo)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=1e-3)
    return PPOTrainer(policy, load_tokenizer(settings.model_path, settings.tools), lambda *_: None, settings.ppo, 0)


def timed_batch(trainer: PPOTrainer, prompts: list[list[dict]]) -> tuple[int, float]:
    started = time.perf_counter()
    _, attention, prompt_length = trainer.generate(prompts, "rollout")
    return int(attention[:, prompt_length:].sum()), time.perf_counter() - started


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    trainer = trainee(settings)
    trainer.sampling = Sampling(temperature=args.temperature, max_new_tokens=args.max_tokens)
    questions = load_prompts()
    random.Random(0).shuffle(questions)
    runs: dict[str, list[tuple[int, float]]] = {arm: [] for arm in ARMS}
    with running("chatloop", chatloop_command, settings, args.out) as server:
        torch.set_num_threads(len(os.sched_getaffinity(0)))  # one thread a core left to us, as trainer/loop.py does
        trainees = server.data_dir / "versions" / TRAINEES_DIRNAME
        engine = EngineSampler(server.url, LOCAL_ADMIN_KEY, trainees, settings.max_rollout_answers)
        for batch in range(args.batches):
            chosen = questions[batch * args.prompts : (batch + 1) * args.prompts]
            prompts = [Prompt.asking(q) for q in chosen for _ in range(args.samples)]
            for arm in ARMS:
                trainer.engine = engine if arm == "engine" else None
                tokens, seconds = timed_batch(trainer, prompts)
                assert arm == "trainer" or trainer.engine is engine, "the engine arm fell back to the trainer"
                runs[arm].append((tokens, seconds))
                print(f"batch {batch + 1} {arm}: {tokens} tokens in {seconds:.1f} s", flush=True)
    rates = {arm: [tokens / seconds for tokens, seconds in runs[arm]] for arm in ARMS}
    results = {
        arm: {"tokens_per_s": sum(t for t, _ in runs[arm]) / sum(s for _, s in runs[arm]), "batches": runs[arm]}
        for arm in ARMS
    }
    ratio = results["engine"]["tokens_per_s"] / results["trainer"]["tokens_per_s"]
    rows = [
        (f"{arm}: tokens/s (median batch)", f"{results[arm]['tokens_per_s']:.1f} ({statistics.median(rates[arm]):.1f})")
        for arm in ARMS
    ]
    rows.append(("engine / trainer", f"{ratio:.2f}x"))
    write_results(args.out, args, {**results, "ratio": ratio}, figure_table(rows))


if __name__ == "__main__":
    main()
