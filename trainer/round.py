"""One training round: reward model, (supervised stage,) PPO, gate, artifact, registry entry; then the pairs are
acknowledged.

The registry entry, the round's record and the acknowledgement of the pairs it read are one Redis transaction:
a round killed at any point before it leaves no version and no acknowledged pair, so the next round trains on
the same pairs.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import redis
import torch
from tqdm.auto import tqdm

from core import keys
from core.config import Settings
from core.policy import adapter_path
from core.registry import Registry, Version
from feedback.pairs import PairConsumer, read_all
from trainer.artifacts import remove_partials, write_version
from trainer.data import recent_prompts
from trainer.gate import evaluate_policy, judge
from trainer.ppo import PPOTrainer, load_policy
from trainer.reward import load_tokenizer, train_reward_model
from trainer.sft import supervised_stage

log = logging.getLogger(__name__)

MAX_PAIRS_PER_ROUND = 100_000
PROMPT_POOL = 512


@dataclass
class RoundResult:
    version: Version | None
    reason: str


def _split_prompts(prompts: list[list[dict]], eval_count: int, seed: int) -> tuple[list[list[dict]], list[list[dict]]]:
    """Training and held-out prompts; with few prompts, both use all of them rather than leave PPO with none."""
    shuffled = prompts[:]
    random.Random(seed).shuffle(shuffled)
    if len(shuffled) <= eval_count:
        return shuffled, shuffled
    return shuffled[eval_count:], shuffled[:eval_count]


def run_round(settings: Settings, client: redis.Redis, consumer: PairConsumer, who: str = "trainer") -> RoundResult:
    started = time.time()
    claimed = consumer.read(count=MAX_PAIRS_PER_ROUND)
    if not claimed:
        return RoundResult(None, "no new pairs")
    seed = settings.trainer.seed
    torch.manual_seed(seed)
    remove_partials(settings.versions_dir)
    pairs = [pair for _, pair in read_all(client)]
    base = settings.model_path
    reward_model, reward_metrics = train_reward_model(base, pairs, settings.reward, seed)

    prompts = recent_prompts(client, PROMPT_POOL) or [[m.model_dump() for m in p.prompt] for p in pairs]
    train_prompts, eval_prompts = _split_prompts(prompts, settings.gate.eval_prompts, seed)
    registry = Registry(client)
    parent = registry.parent_for_training()
    policy = load_policy(base, adapter_path(settings.versions_dir, parent), settings.ppo)
    tokenizer = load_tokenizer(base)
    ppo = PPOTrainer(policy, tokenizer, reward_model.score, settings.ppo, seed)

    parent_eval = evaluate_policy(ppo, eval_prompts, seed)
    sft_losses = supervised_stage(policy, tokenizer, pairs, settings.ppo, seed) if settings.ppo.sft_epochs else []
    steps = []
    rng = random.Random(seed)
    for _ in tqdm(range(settings.ppo.rollouts), desc="ppo rollouts", disable=None):
        batch = rng.sample(train_prompts, min(settings.ppo.batch_prompts, len(train_prompts)))
        steps.append(ppo.step(ppo.rollout(batch)))
        log.info("ppo step", extra={k: round(v, 4) for k, v in steps[-1].items()})
    gate = judge(parent_eval, evaluate_policy(ppo, eval_prompts, seed), settings.gate)

    version_id = registry.next_id()
    metrics = {"reward_model": reward_metrics.model_dump(), "sft_losses": sft_losses, "ppo": steps,
               "seconds": time.time() - started}  # fmt: skip
    info = {
        "id": version_id, "parent": parent, "created": time.time(), "metrics": metrics, "gate": gate.model_dump(),
        "hyperparameters": {"reward": settings.reward.model_dump(), "ppo": settings.ppo.model_dump(),
                            "gate": settings.gate.model_dump(), "seed": seed},
        "pairs": [pair.pair_id for _, pair in claimed],
    }  # fmt: skip
    folder = write_version(settings.versions_dir, version_id, policy, reward_model, info)
    version = Version(
        id=version_id, parent=parent, state="candidate" if gate.passed else "rejected", artifact=str(folder),
        created=info["created"], metrics=metrics, gate=gate.model_dump(),
    )  # fmt: skip
    why = "passed the gate" if gate.passed else "; ".join(gate.reasons)
    pipe = client.pipeline(transaction=True)
    registry.register(version, who=who, why=why, pipe=pipe)
    pipe.xadd(
        keys.TRAINER_ROUNDS, {"round": version.model_dump_json(include={"id", "parent", "state", "metrics", "gate"})}
    )
    consumer.ack_in(pipe, [entry for entry, _ in claimed])
    pipe.execute()
    log.info("round done", extra={"version": version_id, "state": version.state, "why": why})
    return RoundResult(version, why)
