"""One training round: reward model, (supervised stage,) preference stage, PPO, gate, artifact, registry entry;
then the pairs are acknowledged. Each stage but the reward model and the gate can be switched off by its settings
(``PREFERENCE__EPOCHS=0``, ``PPO__ROLLOUTS=0``), which is how what each adds is measured.

Prompts whose hash puts them on the held-out side (``trainer/data.py: is_held_out``) are not trained on: their
pairs and their recent answers are what the reward model and the gate are judged on. (A young deployment whose
pairs or recent prompts all fall on one side uses them for both, and says so in the log.) A round the gate rejects
leaves its new pairs new for the next (``RedisSide.carried``), so a rejection costs time, not data.

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from peft import PeftModel

from core.config import Settings
from core.policy import TRAINEES_DIRNAME, adapter_path
from core.registry import Registry, Version
from feedback.pairs import Pair, read_entries, sample_over_time
from trainer.artifacts import REWARD_MODEL, highest_version, remove_partials, write_version
from trainer.best_of import best_of_n
from trainer.chat_text import Prompt
from trainer.context import RedisSide, TrainerContext
from trainer.data import (
    capped,
    is_held_out,
    newest_held_out,
    recent_prompts,
    round_pairs,
    split_held_out,
)
from trainer.distributed import get_accelerator, main_then_share, process_share
from trainer.dpo import preference_stage
from trainer.engine_rollouts import EngineSampler
from trainer.finetune import Example
from trainer.gate import Evidence, GateResult, PolicyEval, evaluate_policy, judge, paired_gain, rank_pairs
from trainer.models import load_policy, load_tokenizer
from trainer.ppo import PPOTrainer
from trainer.progress import progress
from trainer.reward import RewardModel, ScoreScale, train_reward_model
from trainer.sampling import Sampling
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

    version_id: str
    """The id the round's version will have, whether it passes the gate or not."""
    entry_ids: list[str]
    """Stream entries of the pairs claimed for this round: acknowledged once its outcome is recorded."""
    new_entry_ids: list[str]
    """Stream entries of the round's new pairs: carried to the next round if this one is rejected."""
    new_ids: list[str]
    """The round's new pairs: those claimed, and those a rejected round carried over."""
    pairs: list[Pair]
    """The new pairs and a sample of earlier ones, none with a held-out prompt (``trainer/data.py: round_pairs``):
    what the supervised and preference stages learn from."""
    reward_pairs: list[Pair]
    """The same, to the reward model's larger limit."""
    held_out_pairs: list[Pair]
    """Pairs with a held-out prompt, newest first: the reward model's and the gate's evaluation."""
    prompts: list[Prompt]
    """PPO's prompts: recent ones no round holds out."""
    eval_prompts: list[Prompt]
    """The gate's prompts: recent held-out ones."""
    sampling: Sampling
    parent: str
    previous_reward_model: Path | None
    """The newest version's reward model, which this round's continues."""


def _split_prompts(
    prompts: list[Prompt], held_out_share: float, eval_count: int, seed: int
) -> tuple[list[Prompt], list[Prompt]]:
    """PPO's prompts and the gate's, apart by ``is_held_out``; with none on one side (a young deployment), the
    other side's serve both rather than leave PPO or the gate with nothing, and the gate then judges prompts PPO
    practised on."""
    train = [p for p in prompts if not is_held_out(p, held_out_share)]
    held = [p for p in prompts if is_held_out(p, held_out_share)]
    if not train or not held:
        log.warning(
            "the gate's prompts are PPO's: too few recent prompts to hold some out", extra={"prompts": len(prompts)}
        )
    evaluation = held or train
    return train or held, random.Random(seed).sample(evaluation, min(eval_count, len(evaluation)))


def _previous_reward_model(registry: Registry) -> Path | None:
    versions = registry.all()
    return Path(versions[-1].artifact) / REWARD_MODEL if versions else None


def _read_inputs(settings: Settings, side: RedisSide) -> RoundInputs | None:
    """What the round learns from, read at a flat cost however long the pairs stream is: the new pairs, a sample of
    earlier ones (``sample_over_time``) and the newest held-out ones (``newest_held_out``)."""
    claimed = side.consumer.read(count=settings.trainer.round_pairs)
    if not claimed:
        return None
    remove_partials(settings.versions_dir)
    # Taken before training: a Redis that cannot take writes (full, read-only) stops the round before its work.
    version_id = side.registry.next_id(above=highest_version(settings.versions_dir))
    claimed_ids = {entry for entry, _ in claimed}
    carried = read_entries(side.client, sorted(side.carried() - claimed_ids))
    # Carried pairs first: were the round's limit to cut, it would not cut them a second time.
    new_entries = carried + claimed
    new = [pair for _, pair in new_entries]
    share, loop = settings.reward.held_out_share, settings.trainer
    rng = random.Random(f"{loop.seed}:{version_id}")
    sampled = sample_over_time(side.client, 2 * max(loop.round_pairs, settings.reward.max_pairs), rng)
    pool = list({pair.pair_id: pair for pair in [*new, *(pair for _, pair in sampled)]}.values())
    every_train, _ = split_held_out(pool, share)
    held = newest_held_out(side.client, share, settings.gate.held_out_pairs)
    if not every_train:
        log.warning("every pair's prompt is held out: the round trains on them and evaluates on none")
        every_train, held = pool, []
    trainable = {pair.pair_id for pair in every_train}
    new_train = [pair for pair in new if pair.pair_id in trainable]
    recent = recent_prompts(side.client, PROMPT_POOL)
    prompts, eval_prompts = _split_prompts(
        recent.prompts or [Prompt.of_pair(p) for p in pool], share, settings.gate.eval_prompts, loop.seed
    )
    return RoundInputs(
        version_id=version_id,
        entry_ids=[entry for entry, _ in claimed],
        new_entry_ids=[entry for entry, _ in new_entries],
        new_ids=[pair.pair_id for pair in new],
        pairs=round_pairs(new_train, every_train, loop.round_pairs, loop.seed, loop.max_principal_share),
        reward_pairs=round_pairs(
            new_train, every_train, settings.reward.max_pairs, loop.seed, loop.max_principal_share
        ),
        held_out_pairs=capped(held, settings.gate.held_out_pairs, loop.max_principal_share),
        prompts=prompts,
        eval_prompts=eval_prompts,
        sampling=Sampling.of(settings.ppo, recent.served),
        parent=side.registry.parent_for_training(),
        previous_reward_model=_previous_reward_model(side.registry),
    )


@dataclass
class Trained:
    """What a round made, the same on every process."""

    policy: PeftModel
    reward_model: RewardModel
    metrics: dict
    gate: GateResult


@contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Adds the block's duration to ``seconds[stage]``: the round's report says what each stage cost."""
    start = time.monotonic()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.monotonic() - start


def _supervised(
    trainer: TrainerContext, ppo: PPOTrainer, pairs: list[Pair], train_prompts: list[Prompt], rng: random.Random
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


def _ppo_steps(settings: Settings, ppo: PPOTrainer, train_prompts: list[Prompt], rng: random.Random) -> list[dict]:
    steps = []
    for _ in progress(range(settings.ppo.rollouts), "ppo rollouts"):
        batch = rng.sample(train_prompts, min(settings.ppo.batch_prompts, len(train_prompts)))
        rollout = ppo.rollout(process_share(batch).items, samples=settings.ppo.samples_per_prompt)
        steps.append(ppo.step(rollout))
        log.info("ppo step", extra={k: round(v, 4) for k, v in steps[-1].items()})
    return steps


def _gain(before: PolicyEval, after: PolicyEval) -> dict:
    """A stage's paired reward gain on the held-out prompts, and its standard error."""
    gain, se = paired_gain(before.rewards, after.rewards)
    return {"gain": gain, "se": se}


def _engine(settings: Settings) -> EngineSampler | None:
    if not settings.ppo.engine_rollouts:
        return None
    trainees = settings.versions_dir / TRAINEES_DIRNAME
    url = settings.ppo.engine_url or settings.server_url
    return EngineSampler(url, settings.admin_key.get_secret_value(), trainees, settings.max_rollout_answers)


def _train(trainer: TrainerContext, inputs: RoundInputs, started: float) -> Trained:
    settings = trainer.settings
    seed = settings.trainer.seed
    torch.manual_seed(seed)
    base = settings.model_path
    seconds: dict[str, float] = {}
    with _timed(seconds, "reward_model"):
        reward_model, reward_metrics = train_reward_model(
            base,
            inputs.reward_pairs,
            inputs.held_out_pairs,
            settings.reward,
            settings.tools,
            seed,
            inputs.previous_reward_model,
        )
    parent_adapter = adapter_path(settings.versions_dir, inputs.parent)
    tokenizer = load_tokenizer(base, settings.tools)
    policy = load_policy(base, parent_adapter, settings.ppo)
    ppo = PPOTrainer(policy, tokenizer, reward_model.score, settings.ppo, seed, inputs.sampling, _engine(settings))
    parent_weights = ppo.adapter_weights()

    with _timed(seconds, "gate"):
        parent_eval = evaluate_policy(ppo, inputs.eval_prompts, seed, "gate: the parent's answers")
        reward_model.scale = ScoreScale.fit(parent_eval.rewards)
        parent_eval = parent_eval.rescaled(reward_model.scale)
        parent_pairs = rank_pairs(ppo, inputs.held_out_pairs)
    rng = random.Random(seed)
    sft_losses, best_of = [], {}
    if settings.supervised.epochs:
        with _timed(seconds, "supervised"):
            sft_losses, best_of = _supervised(trainer, ppo, inputs.pairs, inputs.prompts, rng)
    dpo_losses = []
    if settings.preference.epochs:
        with _timed(seconds, "preference"):
            dpo_losses = preference_stage(
                ppo.policy, tokenizer, inputs.pairs, settings.preference, settings.ppo, seed, trainer.references
            )
        log.info("preference stage", extra={"dpo_losses": [round(loss, 4) for loss in dpo_losses]})
    fine_tuned = settings.supervised.epochs > 0 or settings.preference.epochs > 0
    before_ppo = None
    if fine_tuned and settings.ppo.rollouts:
        with _timed(seconds, "gate"):
            before_ppo = evaluate_policy(ppo, inputs.eval_prompts, seed, "gate: after fine-tuning, before PPO")
    with _timed(seconds, "ppo"):
        steps = _ppo_steps(settings, ppo, inputs.prompts, rng)
    with _timed(seconds, "gate"):
        candidate = evaluate_policy(ppo, inputs.eval_prompts, seed, "gate: the new policy's answers", parent_weights)
        evidence = Evidence(
            parent_pairs=parent_pairs,
            candidate_pairs=rank_pairs(ppo, inputs.held_out_pairs),
            reward_accuracy=reward_metrics.held_out_accuracy,
            reward_held_out=reward_metrics.held_out_pairs,
        )
        gate = judge(parent_eval, candidate, settings.gate, evidence)
    metrics = {
        "reward_model": reward_metrics.model_dump(),
        "reward_scale": reward_model.scale.model_dump(),
        "sampling": asdict(inputs.sampling),
        "sft_losses": sft_losses,
        "dpo_losses": dpo_losses,
        "best_of": best_of,
        "ppo": steps,
        "gains": {
            "fine_tuning": _gain(parent_eval, before_ppo or candidate) if fine_tuned else None,
            "ppo": _gain(before_ppo or parent_eval, candidate) if steps else None,
        },
        "stage_seconds": seconds,
        "seconds": time.time() - started,
    }
    return Trained(ppo.policy, reward_model, metrics, gate)


def _record(settings: Settings, side: RedisSide, inputs: RoundInputs, trained: Trained) -> RoundResult:
    """The version folder, then its commit (``RedisSide.commit``); a trainer that lost its lock meanwhile removes
    the folder and registers nothing."""
    version_id = inputs.version_id
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
        "pairs": inputs.new_ids,
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
    trained_on = sorted({pair.pair_id for pair in [*inputs.pairs, *inputs.reward_pairs]})
    carry = [] if gate.passed else inputs.new_entry_ids
    if not side.commit(version, why, inputs.entry_ids, trained_on, carry):
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
