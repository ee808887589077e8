"""PPO's optimizer on its own: how far each way to an advantage (``PPO__ADVANTAGE``: ``group`` or ``critic``) moves
a graded preference in the same number of rollouts, given a reward that is right.

In a round PPO's reward comes from a reward model that users' pairs trained; here a simulated user's preference
function (``client/simulation/preferences.py``) scores the answers itself, normalized on the base model's answers
as a round normalizes its reward model's, so the figures are about the optimizer, not the reward model. Every arm
starts from the base model with the same seed and prompts, samples as the simulated users are served, and is
measured before and after on held-out prompts: the share of answers that satisfy the preference, and the KL to the
base. No Redis or engine is needed:

    .venv/bin/python bench/ppo.py --preference concise --rollouts 6
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch
from report import default_out, figure_table, write_results

from client.simulation.preferences import resolve, satisfies
from client.simulation.prompt_set import load_prompts
from core.config import PPOSettings, Settings
from trainer.chat_text import Prompt
from trainer.models import load_policy, load_tokenizer
from trainer.ppo import PPOTrainer
from trainer.reward import ScoreScale
from trainer.sampling import Sampling


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preference", default="concise")
    parser.add_argument("--rollouts", type=int, default=6)
    parser.add_argument("--advantages", nargs="+", default=["group", "critic"])
    parser.add_argument("--eval-prompts", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.7, help="the simulated users' sampling")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, default=default_out("ppo"))
    return parser.parse_args()


def measure(trainer: PPOTrainer, prompts: list[Prompt], preference) -> dict[str, float]:
    """Satisfied share, mean score and KL to the base over one answer to each prompt, sampled with a fixed seed."""
    torch.manual_seed(1)
    rollout = trainer.rollout(prompts, "measure")
    scores = [preference(p.messages, a) for p, a in zip(rollout.prompts, rollout.answers, strict=True)]
    return {
        "scores": scores,
        "satisfied": statistics.fmean(satisfies(s) for s in scores),
        "score": statistics.fmean(scores),
        "kl_to_base": trainer.kl_to_base(rollout).mean().item(),
        "answer_tokens": rollout.mask.sum(dim=1).mean().item(),
    }


def run_arm(advantage: str, args: argparse.Namespace, prompts: tuple[list, list], settings: Settings) -> dict:
    train, held_out = prompts
    preference = resolve(args.preference)
    ppo_settings = PPOSettings(**{**settings.ppo.model_dump(), "advantage": advantage})
    sampling = Sampling(temperature=args.temperature, max_new_tokens=args.max_tokens)
    torch.manual_seed(0)
    policy = load_policy(settings.model_path, None, ppo_settings)
    scale = ScoreScale()

    def reward(conversations, answers, ended) -> torch.Tensor:  # the user sees a cut-off answer in its text
        raw = torch.tensor([preference(c.messages, a) for c, a in zip(conversations, answers, strict=True)])
        return scale.apply(raw)

    trainer = PPOTrainer(policy, load_tokenizer(settings.model_path, settings.tools), reward, ppo_settings, 0, sampling)
    before = measure(trainer, held_out, preference)
    fitted = ScoreScale.fit(before["scores"])  # on the base model's answers, as a round fits on its parent's
    scale.mean, scale.deviation = fitted.mean, fitted.deviation
    rng = random.Random(0)
    started = time.perf_counter()
    steps = []
    for _ in range(args.rollouts):
        batch = rng.sample(train, ppo_settings.batch_prompts)
        steps.append(trainer.step(trainer.rollout(batch, samples=ppo_settings.samples_per_prompt)))
        print(advantage, {k: round(v, 3) for k, v in steps[-1].items()}, flush=True)
    seconds = time.perf_counter() - started
    return {"before": before, "after": measure(trainer, held_out, preference), "seconds": seconds, "steps": steps}


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    texts = load_prompts()
    random.Random(0).shuffle(texts)
    conversations = [Prompt.asking(text) for text in texts]
    prompts = (conversations[args.eval_prompts :], conversations[: args.eval_prompts])
    arms = {advantage: run_arm(advantage, args, prompts, settings) for advantage in args.advantages}
    rows = []
    for advantage, arm in arms.items():
        before, after = arm["before"], arm["after"]
        rows.append(
            (
                f"`{advantage}`: satisfied before → after ({args.eval_prompts} held-out prompts)",
                f"{100 * before['satisfied']:.1f}% → {100 * after['satisfied']:.1f}% "
                f"({100 * (after['satisfied'] - before['satisfied']):+.1f} points)",
            )
        )
        rows.append((f"`{advantage}`: mean score before → after", f"{before['score']:.3f} → {after['score']:.3f}"))
        rows.append(
            (
                f"`{advantage}`: KL to the base after, answer tokens",
                f"{after['kl_to_base']:.2f}, {after['answer_tokens']:.0f}",
            )
        )
        rows.append((f"`{advantage}`: seconds for {args.rollouts} rollouts", f"{arm['seconds']:.0f}"))
    write_results(args.out, args, {"arms": arms}, figure_table(rows))


if __name__ == "__main__":
    main()
