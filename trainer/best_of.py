"""Best-of-n examples for the supervised stage: of n answers the policy samples to a prompt, the one the reward
model ranks first.

Reward-ranked fine-tuning (RAFT: Dong et al., 2023, "RAFT: Reward rAnked FineTuning for Generative Foundation Model
Alignment"): for each of P prompts, sample n answers ``y_1 .. y_n ~ pi(. | x)`` and keep ``argmax_j r(x, y_j)``;
the supervised stage then imitates these beside the answers users chose.

Why a round needs it: a pair forms only where a user's two answers differ, so the chosen answers teach a
preference only on the prompts where the policy already shows it now and then. For ``bulleted`` that is about a
quarter of the prompts, and after imitation the versions listed on 70% of those but on 12% of the others
(docs/benchmarks.md, "Closed loop"). Sampling several answers to prompts users really asked finds the preferred form
where the policy shows it rarely, and the reward model, which generalises from the pairs, picks it out; the
next round samples from a policy that shows it more often.

The examples are the sampled tokens themselves: an answer cut off at ``max_new_tokens`` is imitated without an
end-of-turn token, so the stage does not teach the policy to stop where sampling did. Every process samples
every prompt with the same seed, so all hold the same examples, as the supervised stage expects.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainer.chat_text import Prompt
from trainer.finetune import IGNORE, Example
from trainer.ppo import PPOTrainer


def best_of_n(trainer: PPOTrainer, prompts: Sequence[Prompt], n: int, seed: int) -> tuple[list[Example], dict]:
    """One example per prompt, and the mean reward of the kept answers against that of all sampled ones."""
    torch.manual_seed(seed)
    repeated = [prompt for prompt in prompts for _ in range(n)]
    sequences, attention, prompt_length = trainer.generate(repeated, f"best-of-{n} sampling")
    _, scores = trainer.score(repeated, sequences, prompt_length)
    scores = scores.view(len(prompts), n)
    best = scores.argmax(dim=1)
    examples = []
    for i, j in enumerate(best.tolist()):
        row = i * n + j
        real = attention[row].bool()
        ids = sequences[row][real].unsqueeze(0)
        labels = ids.clone()
        labels[:, : int(attention[row, :prompt_length].sum())] = IGNORE
        examples.append((ids, labels))
    stats = {
        "prompts": len(prompts),
        "n": n,
        "mean_reward": scores.mean().item(),
        "best_reward": scores.max(dim=1).values.mean().item(),
    }
    return examples, stats
