"""One training round: reward model, (supervised stage, preference stage,) PPO, gate, artifact, registry entry;
then the pairs are acknowledged.

The registry entry, the round's record and the acknowledgement of the pairs it read are one Redis transaction,
which commits only while this trainer still holds the trainer lock (``trainer/context.py``): a round killed at any
point before it, or one whose lease lapsed, leaves no version and no acknowledged pair, so the next round trains
on the same pairs.

Under ``accelerate launch`` every process runs the round; the main process alone reads Redis and writes the version
and its records, and shares what it read and the outcome with the others (``trainer/distributed.py``).
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import dataclass

import torch
from peft import PeftModel

from core.config import Settings
from core.policy import adapter_path
from core.registry import Version
from feedback.pairs import Pair, read_all
from trainer.artifacts import remove_partials, write_version
from trainer.best_of import best_of_n
from trainer.context import RedisSide, TrainerContext
from trainer.data import recent_prompts, round_pairs
from trainer.distributed import get_accelerator, main_then_share, process_share
from trainer.dpo import preference_stage
from trainer.finetune import Example
from trainer.gate import GateResult, evaluate_policy, judge
from trainer.models import load_policy, load_tokenizer
from trainer.ppo import PPOTrainer
from trainer.progress import progress
from trainer.reward import RewardModel, train_reward_model
from trainer.sft import chosen_example, supervised_stage

log = logging.getLogger(__name__)

PROMPT_POOL = 512


@dataclass
class RoundResult:
    version: Version | None
    reason: str


@dataclass
class RoundInputs:
    """What a round reads from Redis before it trains: read by the main process, the same on every process."""

    entry_ids: list[str]
    """Stream entries of the pairs claimed for this round: acknowledged once its outcome is recorded."""
    pair_ids: list[str]
    pairs: list[Pair]
    """The claimed pairs and a sample of earlier ones (``trainer/data.py: round_pairs``): what the reward model and
    the supervised stage learn from."""
    prompts: list[list[dict]]
    parent: str


def _split_prompts(prompts: list[list[dict]], eval_count: int, seed: int) -> tuple[list[list[dict]], list[list[dict]]]:
    """Training and held-out prompts; with few prompts, both use all of them rather than leave PPO with none."""
    shuffled = prompts[:]
    random.Random(seed).shuffle(shuffled)
    if len(shuffled) <= eval_count:
        return shuffled, shuffled
    return shuffled[eval_count:], shuffled[:eval_count]


def _read_inputs(settings: Settings, side: RedisSide) -> RoundInputs | None:
    claimed = side.consumer.read(count=settings.trainer.round_pairs)
    if not claimed:
        return None
    remove_partials(settings.versions_dir)
    every = [pair for _, pair in read_all(side.client)]
    loop = settings.trainer
    pairs = round_pairs([pair for _, pair in claimed], every, loop.round_pairs, loop.seed, loop.max_principal_share)
    prompts = recent_prompts(side.client, PROMPT_POOL) or [[m.model_dump() for m in p.prompt] for p in pairs]
    return RoundInputs(
        entry_ids=[entry for entry, _ in claimed],
        pair_ids=[pair.pair_id for _, pair in claimed],
        pairs=pairs,
        prompts=prompts,
        parent=side.registry.parent_for_training(),
    )


@dataclass
class Trained:
    """What a round made, the same on every process."""

    policy: PeftModel
    reward_model: RewardModel
    metrics: dict
    gate: GateResult


def _supervised(
    trainer: TrainerContext, ppo: PPOTrainer, pairs: list[Pair], train_prompts: list[list[dict]], rng: random.Random
) -> tuple[list[float], dict]:
    """The supervised stage's losses, and the best-of-n figures (none without best-of-n)."""
    settings, seed = trainer.settings.supervised, trainer.settings.trainer.seed
    examples: list[Example] = [chosen_example(ppo.tokenizer, pair) for pair in pairs]
    best_of = {}
    if settings.best_of > 1:
        sampled = rng.sample(train_prompts, min(settings.best_of_prompts, len(train_prompts)))
        found, best_of = best_of_n(ppo, sampled, settings.best_of, seed)
        examples += found
        log.info("best of n", extra={k: round(v, 4) for k, v in best_of.items()})
    return supervised_stage(ppo.policy, examples, settings, trainer.settings.ppo, seed), best_of


def _ppo_steps(settings: Settings, ppo: PPOTrainer, train_prompts: list[list[dict]], rng: random.Random) -> list[dict]:
    steps = []
    for _ in progress(range(settings.ppo.rollouts), "ppo rollouts"):
        batch = rng.sample(train_prompts, min(settings.ppo.batch_prompts, len(train_prompts)))
        steps.append(ppo.step(ppo.rollout(process_share(batch).items)))
        log.info("ppo step", extra={k: round(v, 4) for k, v in steps[-1].items()})
    return steps


def _train(trainer: TrainerContext, inputs: RoundInputs, started: float) -> Trained:
    settings = trainer.settings
    seed = settings.trainer.seed
    torch.manual_seed(seed)
    base = settings.model_path
    reward_model, reward_metrics = train_reward_model(base, inputs.pairs, settings.reward, seed)

    train_prompts, eval_prompts = _split_prompts(inputs.prompts, settings.gate.eval_prompts, seed)
    parent_adapter = adapter_path(settings.versions_dir, inputs.parent)
    tokenizer = load_tokenizer(base)
    ppo = PPOTrainer(load_policy(base, parent_adapter, settings.ppo), tokenizer, reward_model.score, settings.ppo, seed)

    parent_eval = evaluate_policy(ppo, eval_prompts, seed, "gate: the parent's answers")
    rng = random.Random(seed)
    sft_losses, best_of = [], {}
    if settings.supervised.epochs:
        sft_losses, best_of = _supervised(trainer, ppo, inputs.pairs, train_prompts, rng)
    dpo_losses = []
    if settings.preference.epochs:
        dpo_losses = preference_stage(
            ppo.policy, tokenizer, inputs.pairs, settings.preference, settings.ppo, seed, trainer.references
        )
        log.info("preference stage", extra={"dpo_losses": [round(loss, 4) for loss in dpo_losses]})
    steps = _ppo_steps(settings, ppo, train_prompts, rng)
    gate = judge(parent_eval, evaluate_policy(ppo, eval_prompts, seed, "gate: the new policy's answers"), settings.gate)
    metrics = {
        "reward_model": reward_metrics.model_dump(),
        "sft_losses": sft_losses,
        "dpo_losses": dpo_losses,
        "best_of": best_of,
        "ppo": steps,
        "seconds": time.time() - started,
    }
    return Trained(ppo.policy, reward_model, metrics, gate)


def _record(settings: Settings, side: RedisSide, inputs: RoundInputs, trained: Trained) -> RoundResult:
    """The version folder, then its commit (``RedisSide.commit``); a trainer that lost its lock meanwhile removes
    the folder and registers nothing."""
    version_id = side.registry.next_id()
    gate = trained.gate
    info = {
        "id": version_id,
        "parent": inputs.parent,
        "created": time.time(),
        "metrics": trained.metrics,
        "gate": gate.model_dump(),
        "hyperparameters": {
            "reward": settings.reward.model_dump(),
            "supervised": settings.supervised.model_dump(),
            "preference": settings.preference.model_dump(),
            "ppo": settings.ppo.model_dump(),
            "gate": settings.gate.model_dump(),
            "seed": settings.trainer.seed,
            "processes": get_accelerator().num_processes,
        },
        "pairs": inputs.pair_ids,
    }
    folder = write_version(settings.versions_dir, version_id, trained.policy, trained.reward_model, info)
    version = Version(
        id=version_id,
        parent=inputs.parent,
        state="candidate" if gate.passed else "rejected",
        artifact=str(folder),
        created=info["created"],
        metrics=trained.metrics,
        gate=gate.model_dump(),
    )
    why = "passed the gate" if gate.passed else "; ".join(gate.reasons)
    if not side.commit(version, why, inputs.entry_ids, [pair.pair_id for pair in inputs.pairs]):
        shutil.rmtree(folder, ignore_errors=True)
        log.warning("trainer lock lost: the round registers nothing", extra={"version": version_id})
        return RoundResult(None, "the trainer lock was lost before the round could register its version")
    log.info("round done", extra={"version": version_id, "state": version.state, "why": why})
    return RoundResult(version, why)


def run_round(trainer: TrainerContext) -> RoundResult:
    """One round. Under ``accelerate launch`` every process calls it and gets the same result; the main process
    alone reads Redis and records the outcome. The preference stage adds the round's new pairs to
    ``trainer.references``."""
    started = time.time()
    settings = trainer.settings
    inputs = main_then_share(lambda: _read_inputs(settings, trainer.redis))
    if inputs is None:
        return RoundResult(None, "no new pairs")
    try:
        trained = _train(trainer, inputs, started)
        return main_then_share(lambda: _record(settings, trainer.redis, inputs, trained))
    finally:
        # The Accelerator holds on to what it prepared: a long-running trainer would keep every round's models.
        get_accelerator().free_memory()
