"""The trainer on the real default model and a real Redis, with settings small enough for a CPU test run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import torch

from core import keys
from core.config import (
    PPOSettings,
    PreferenceSettings,
    RewardSettings,
    Settings,
    ToolSettings,
    TrainerLoopSettings,
)
from core.registry import Registry, Version
from core.routing import Routing
from feedback.pairs import PairAnswer, PairConsumer
from tests.factories import TOPICS, seed_pairs, short_over_long_pair
from tests.helpers import REPO, SMALL_ROUND, RedisHandle, free_port
from trainer.best_of import best_of_n
from trainer.chat_text import Prompt
from trainer.context import CONSUMER, RedisSide, TrainerContext
from trainer.data import split_held_out
from trainer.dpo import References, pair_batch, preference_stage
from trainer.engine_rollouts import EngineSampler
from trainer.finetune import IGNORE, answer_example, answer_logprobs
from trainer.loop import renewed
from trainer.losses import token_logprobs
from trainer.models import load_policy, load_tokenizer
from trainer.ppo import PPOTrainer
from trainer.reward import RewardModel, ScoreScale, train_reward_model
from trainer.round import _read_inputs

pytestmark = pytest.mark.integration


def test_reward_model_learns_a_synthetic_preference_and_the_next_round_keeps_it(
    model_path: Path, tmp_path: Path
) -> None:
    train, held_out = split_held_out([short_over_long_pair(i) for i in range(40)], 0.25)
    settings = RewardSettings(epochs=2, top_layers=2, max_length=96, held_out_share=0.25, batch_size=6)
    model, metrics = train_reward_model(model_path, train[:24], held_out, settings, ToolSettings(), seed=0)
    assert metrics.held_out_pairs == len(held_out) > 3 and not metrics.warm_started
    assert metrics.held_out_accuracy is not None and metrics.held_out_accuracy >= 0.8
    assert metrics.held_out_margin > 0 and metrics.held_out_log_loss < math.log(2)
    model.scale = ScoreScale(mean=1.0, deviation=2.0)
    model.save(tmp_path)
    warm, again = train_reward_model(
        model_path, train[24:28], held_out, settings, ToolSettings(), seed=1, previous=tmp_path
    )
    assert again.warm_started and again.train_pairs == 4
    assert warm.scale == ScoreScale(), "the previous round's scale fits the previous scores: the round fits its own"
    assert again.held_out_accuracy >= 0.8, "four more pairs, one epoch: what the first round learnt is kept"
    fresh = RewardModel.load(model_path, tmp_path, settings.max_length, ToolSettings())
    assert fresh.scale == ScoreScale(mean=1.0, deviation=2.0), "the scale is saved with the model"


def test_ppo_step_moves_the_adapter_from_zero_kl(model_path: Path) -> None:
    settings = PPOSettings(
        batch_prompts=2, max_new_tokens=12, temperature=0.7, epochs=1, minibatch_size=4, learning_rate=1e-4
    )
    torch.manual_seed(0)
    policy = load_policy(model_path, None, settings)
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    reward = lambda prompts, answers, ended: torch.tensor([-len(a) / 10 for a in answers])  # noqa: E731
    trainer = PPOTrainer(policy, load_tokenizer(model_path, ToolSettings()), reward, settings, seed=0)
    prompts = [Prompt.asking(f"Tell me about {t}.") for t in TOPICS[:2]]
    rollout = trainer.rollout(prompts, samples=2)
    assert rollout.groups.tolist() == [0, 0, 1, 1] and rollout.prompts[0] == rollout.prompts[1]
    assert trainer.kl_to_base(rollout).abs().max().item() == 0, "a fresh adapter is the base model"
    with torch.no_grad():
        logits = policy(input_ids=rollout.sequences, attention_mask=rollout.attention).logits
    answer_logits = logits[:, rollout.prompt_length - 1 : -1].float()
    sampled = token_logprobs(answer_logits / 0.7, rollout.sequences[:, rollout.prompt_length :])
    torch.testing.assert_close(rollout.logprobs * rollout.mask, sampled * rollout.mask)
    stats = trainer.step(rollout)
    assert stats["kl"] == 0
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    changed = [n for n, p in policy.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed, "the update changed no adapter weight"


def test_best_of_n_keeps_the_answer_the_reward_ranks_first(model_path: Path) -> None:
    settings = PPOSettings(max_new_tokens=12)
    tokenizer = load_tokenizer(model_path, ToolSettings())
    seen: list[str] = []

    def shortest_first(prompts: list, answers: list[str], ended: list[bool]) -> torch.Tensor:
        seen.extend(answers)
        return torch.tensor([-float(len(a)) for a in answers])

    trainer = PPOTrainer(load_policy(model_path, None, settings), tokenizer, shortest_first, settings, seed=0)
    prompts = [Prompt.asking(f"Tell me about {t}.") for t in TOPICS[:3]]
    examples, stats = best_of_n(trainer, prompts, n=4, seed=0)
    assert len(examples) == 3 and len(seen) == 12
    for (ids, labels), group in zip(examples, [seen[i : i + 4] for i in range(0, 12, 4)], strict=True):
        answer = labels[0] != IGNORE
        assert tokenizer.decode(ids[0][answer], skip_special_tokens=True) == min(group, key=len)
        assert not answer[: int((~answer).sum())].any(), "only the answer's tokens, after the prompt, are learnt"
    assert stats["best_reward"] >= stats["mean_reward"]


def test_without_a_server_the_trainer_samples_its_rollouts_itself(
    model_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = PPOSettings(max_new_tokens=8, temperature=0.7)
    nobody = EngineSampler(f"http://127.0.0.1:{free_port()}", "key", tmp_path, max_answers=32)
    reward = lambda prompts, answers, ended: torch.zeros(len(answers))  # noqa: E731
    policy = load_policy(model_path, None, settings)
    trainer = PPOTrainer(policy, load_tokenizer(model_path, ToolSettings()), reward, settings, 0, engine=nobody)
    rollout = trainer.rollout([Prompt.asking("Hello")], samples=2)
    assert len(rollout.answers) == 2 and rollout.mask.sum() > 0
    assert trainer.engine is None, "the rest of the round samples in the trainer, without asking again"
    assert "the serving engine cannot sample" in caplog.text and not any(tmp_path.iterdir())


def test_an_answer_cut_off_at_its_limit_is_learnt_without_an_end_of_turn(model_path: Path) -> None:
    tokenizer = load_tokenizer(model_path, ToolSettings())
    pair = short_over_long_pair(0)
    answer = lambda finish: PairAnswer(**{**pair.chosen.model_dump(), "finish_reason": finish})  # noqa: E731
    ended_ids, ended_labels = answer_example(tokenizer, Prompt.of_pair(pair), answer("stop"))
    cut_ids, cut_labels = answer_example(tokenizer, Prompt.of_pair(pair), answer("length"))
    assert tokenizer.eos_token_id in ended_labels[0].tolist()
    assert tokenizer.eos_token_id not in cut_labels[0].tolist()
    assert torch.equal(cut_ids[0], ended_ids[0, : cut_ids.shape[1]]), "the same tokens, up to where the answer ends"
    learnt = cut_ids[0][cut_labels[0] != IGNORE]
    assert tokenizer.decode(learnt) == pair.chosen.text


def test_the_reward_model_sees_an_answer_cut_off_at_its_limit(model_path: Path) -> None:
    model = RewardModel.create(model_path, RewardSettings(), ToolSettings())
    prompt = Prompt.asking("Tell me about rivers.")
    ended, cut = model.score([prompt, prompt], ["Rivers run to the sea"] * 2, [True, False]).tolist()
    assert ended != pytest.approx(cut), "the same words, once finished and once broken off, are two answers"


def margins(policy, tokenizer, pairs) -> list[float]:
    """Per pair, how much more the chosen answer than the rejected one gained in log-likelihood over the base."""
    with torch.no_grad():
        batches = [pair_batch(policy, tokenizer, pair, References()) for pair in pairs]
        gains = [answer_logprobs(policy, b.ids, b.attention, b.labels) - b.reference for b in batches]
    return [(chosen - rejected).item() for chosen, rejected in gains]


def test_the_preference_stage_moves_the_policy_towards_the_chosen_answers(model_path: Path) -> None:
    updates = PPOSettings(minibatch_size=4)
    settings = PreferenceSettings(epochs=2, beta=0.1, learning_rate=1e-4)
    tokenizer = load_tokenizer(model_path, ToolSettings())
    policy = load_policy(model_path, None, updates)
    pairs = [short_over_long_pair(i) for i in range(8)]
    assert margins(policy, tokenizer, pairs) == pytest.approx([0.0] * 8, abs=1e-3), "a fresh adapter is the base"
    losses = preference_stage(policy, tokenizer, pairs, settings, updates, seed=0, references=References())
    assert losses[1] < losses[0] < math.log(2)
    assert all(margin > 0 for margin in margins(policy, tokenizer, pairs)), "a rejected answer gained more"


def test_the_references_kept_from_round_to_round_are_the_base_models(model_path: Path) -> None:
    updates = PPOSettings(minibatch_size=3)
    settings = PreferenceSettings(epochs=1, learning_rate=1e-3)
    tokenizer = load_tokenizer(model_path, ToolSettings())
    policy = load_policy(model_path, None, updates)
    pairs = [short_over_long_pair(i) for i in range(5)]
    references = References()
    preference_stage(policy, tokenizer, pairs[:3], settings, updates, seed=0, references=references)
    preference_stage(policy, tokenizer, pairs[1:], settings, updates, seed=0, references=references)
    assert len(references) == 5, "each pair is scored under the reference once"
    kept = [pair_batch(policy, tokenizer, pair, references).reference for pair in pairs]
    afresh = [pair_batch(policy, tokenizer, pair, References()).reference for pair in pairs]
    for pair_kept, pair_afresh in zip(kept, afresh, strict=True):
        torch.testing.assert_close(pair_kept, pair_afresh)


def test_the_next_round_continues_the_canary_while_one_is_tried(redis_server: RedisHandle) -> None:
    client = redis_server.client()
    client.delete(keys.ROUTING)
    registry = Registry(client)
    assert registry.parent_for_training() == "base"
    client.set(keys.ROUTING, Routing(active="v1", canary="v2", canary_percent=50.0).model_dump_json())
    assert registry.parent_for_training() == "v2"
    client.set(keys.ROUTING, Routing(active="v2").model_dump_json())
    assert registry.parent_for_training() == "v2"
    client.delete(keys.ROUTING)


def round_ready_to_commit(client: redis.Redis, tmp_path: Path) -> tuple[RedisSide, list[str], Version]:
    """A main process's Redis side holding the lock, with three claimed pairs and the version trained from them:
    where a round stands when it commits."""
    seed_pairs(client, 3)
    client.delete(keys.TRAINER_ROUNDS)
    side = TrainerContext.create(Settings(_env_file=None, data_dir=tmp_path), client).redis
    entry_ids = [entry for entry, _ in side.consumer.read(count=3)]
    version = Version(
        id=side.registry.next_id(), parent="base", state="candidate", artifact=str(tmp_path), created=time.time()
    )
    assert side.lock.acquire()
    return side, entry_ids, version


def test_a_round_whose_lock_was_taken_over_cannot_commit(redis_server: RedisHandle, tmp_path: Path) -> None:
    client = redis_server.client()
    side, entry_ids, version = round_ready_to_commit(client, tmp_path)
    client.set(keys.TRAINER_LOCK, "another-trainer", px=60_000)  # the lease lapsed and another trainer took the lock
    assert not side.commit(version, "passed the gate", entry_ids, [], [])
    assert Registry(client).all() == [], "a trainer that lost its lock registered a version"
    assert client.xlen(keys.TRAINER_ROUNDS) == 0
    assert PairConsumer(client, "observer").pending() == 3, "a trainer that lost its lock acknowledged pairs"

    client.delete(keys.TRAINER_LOCK)
    assert side.lock.acquire()
    assert side.commit(version, "passed the gate", entry_ids, [], []), (
        "the lock is the trainer's again: the commit lands"
    )
    assert [v.id for v in Registry(client).all()] == [version.id]
    assert client.xlen(keys.TRAINER_ROUNDS) == 1 and PairConsumer(client, "observer").pending() == 0
    side.lock.release()


def test_a_rejected_rounds_new_pairs_are_new_again_in_the_next_round(redis_server: RedisHandle, tmp_path: Path) -> None:
    client = redis_server.client()
    side, entry_ids, version = round_ready_to_commit(client, tmp_path)
    settings = Settings(_env_file=None, data_dir=tmp_path)
    rejected = version.model_copy(update={"state": "rejected"})
    pair_ids = [json.loads(fields["pair"])["pair_id"] for _, fields in client.xrange(keys.PAIRS_STREAM)]
    assert side.commit(rejected, "worse than its parent", entry_ids, [], carry=entry_ids)
    assert PairConsumer(client, "observer").pending() == 0, "acknowledged: no round takes them back as abandoned"
    assert _read_inputs(settings, side) is None, "carried pairs alone start no round"
    client.xadd(keys.PAIRS_STREAM, {"pair": short_over_long_pair(3).model_dump_json()})
    inputs = _read_inputs(settings, side)
    assert sorted(inputs.new_ids) == sorted([*pair_ids, "pair-3"])
    assert {pair.pair_id for pair in inputs.reward_pairs} | {p.pair_id for p in inputs.held_out_pairs} >= set(pair_ids)
    passed = version.model_copy(update={"id": side.registry.next_id()})
    assert side.commit(passed, "passed the gate", inputs.entry_ids, [], carry=[])
    assert side.carried() == set()
    side.lock.release()


def test_a_round_reads_a_bounded_sample_from_across_a_long_stream(redis_server: RedisHandle, tmp_path: Path) -> None:
    """A round's cost stays flat as the stream grows: new pairs, a sample of earlier ones from its whole length, and
    the newest held-out ones, none of it by reading the stream through."""
    client = redis_server.client()
    seed_pairs(client, 0)
    pipe = client.pipeline(transaction=False)
    for i in range(3000):  # a pair a second for 50 minutes
        pipe.xadd(keys.PAIRS_STREAM, {"pair": short_over_long_pair(i).model_dump_json()}, id=f"{10**12 + i * 1000}-0")
    pipe.execute()
    client.delete(keys.TRAINER_ROUNDS)
    client.xgroup_destroy(keys.PAIRS_STREAM, keys.TRAINER_GROUP)
    settings = Settings(_env_file=None, data_dir=tmp_path)
    side = TrainerContext.create(settings, client).redis
    inputs = _read_inputs(settings, side)
    index = lambda pairs: sorted(int(pair.pair_id.removeprefix("pair-")) for pair in pairs)  # noqa: E731
    assert inputs.new_ids == [f"pair-{i}" for i in range(settings.trainer.round_pairs)], "the oldest unread"
    earlier = [i for i in index(inputs.reward_pairs) if i >= settings.trainer.round_pairs]
    assert len(inputs.reward_pairs) == settings.reward.max_pairs
    assert min(earlier) < 1000 and max(earlier) > 2000, "earlier pairs from the whole stream"
    held = index(inputs.held_out_pairs)
    share, wanted = settings.reward.held_out_share, settings.gate.held_out_pairs
    assert len(held) == wanted and min(held) >= 3000 - math.ceil(wanted / share) * 4, "the newest held-out pairs"
    assert not set(held) & set(index([*inputs.pairs, *inputs.reward_pairs])), "held out by prompt"


def test_a_commit_retried_after_a_renewal_records_the_version_once(
    redis_server: RedisHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis_server.client()
    side, entry_ids, version = round_ready_to_commit(client, tmp_path)
    owned = side.lock.owned
    checks: list[bool] = []

    def renewed_during_the_first_attempt() -> bool:
        if not checks:
            side.lock.reacquire()  # the renewing thread extends the lease after the lock's key is watched
        checks.append(owned())
        return checks[-1]

    monkeypatch.setattr(side.lock, "owned", renewed_during_the_first_attempt)
    assert side.commit(version, "passed the gate", entry_ids, [], [])
    assert checks == [True, True], "the renewal did not abort the first attempt"
    (stored,) = Registry(client).all()
    assert [entry.why for entry in stored.audit] == ["passed the gate"]
    assert client.xlen(keys.TRAINER_ROUNDS) == 1 and PairConsumer(client, "observer").pending() == 0
    side.lock.release()


def test_the_lease_is_renewed_while_a_round_runs_and_released_after(redis_server: RedisHandle) -> None:
    client = redis_server.client()
    client.delete(keys.TRAINER_LOCK)
    settings = Settings(_env_file=None, trainer=TrainerLoopSettings(lock_lease_s=0.3))
    lock = TrainerContext.create(settings, client).redis.lock
    assert lock.acquire()
    with renewed(lock):
        time.sleep(1.0)
        assert lock.owned(), "the lease ran out while the round ran"
    assert not client.exists(keys.TRAINER_LOCK)


def train_command(redis_server: RedisHandle, tmp_path: Path, model_path: Path) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        **SMALL_ROUND,
        "REDIS_URL": redis_server.url,
        "CHATLOOP_DATA_DIR": str(tmp_path),
        "CHATLOOP_MODEL": str(model_path),
    }
    return [sys.executable, "-m", "client.cli", "train", "--once"], env


def test_a_killed_round_leaves_nothing_and_the_next_trains_on_the_same_pairs(
    redis_server: RedisHandle, tmp_path: Path, model_path: Path
) -> None:
    pair_ids = seed_pairs(redis_server.client(), 12)
    command, env = train_command(redis_server, tmp_path, model_path)
    log = tmp_path / "killed.log"
    with log.open("wb") as out:
        killed = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while b"reward model epoch" not in log.read_bytes():
        assert killed.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    client = redis_server.client()
    assert Registry(client).all() == [], "a killed round registered a version"
    assert PairConsumer(client, "observer").pending() == 12, "the killed round acknowledged pairs"
    client.delete(keys.TRAINER_LOCK)  # its lease would run out; a test need not wait for it

    # No policy can pass this gate: it must say why. The supervised stage, with best-of-n, and DPO run too.
    strict = {
        **env,
        "CHATLOOP_GATE__MIN_REWARD_GAIN": "1000",
        "CHATLOOP_SUPERVISED__EPOCHS": "1",
        "CHATLOOP_PREFERENCE__EPOCHS": "1",
        "CHATLOOP_SUPERVISED__BEST_OF": "2",
        "CHATLOOP_SUPERVISED__BEST_OF_PROMPTS": "3",
    }
    done = subprocess.run(command, cwd=REPO, env=strict, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (version,) = Registry(client).all()
    assert version.parent == "base" and version.state == "rejected"
    assert "mean reward" in version.gate["reasons"][0] and version.audit[-1].why.startswith("mean reward")
    info = json.loads((Path(version.artifact) / "version.json").read_text())
    assert sorted(info["pairs"]) == sorted(pair_ids)
    assert (Path(version.artifact) / "adapter" / "adapter_config.json").exists()
    assert (Path(version.artifact) / "reward_model" / "head.pt").exists()
    assert info["metrics"]["reward_model"]["train_pairs"] + info["metrics"]["reward_model"]["held_out_pairs"] == 12
    (sft_loss,) = info["metrics"]["sft_losses"]
    assert 0 < sft_loss < 20
    (dpo_loss,) = info["metrics"]["dpo_losses"]
    assert 0 < dpo_loss < 5
    best_of = info["metrics"]["best_of"]
    assert (best_of["prompts"], best_of["n"]) == (3, 2) and best_of["best_reward"] >= best_of["mean_reward"]
    assert PairConsumer(client, CONSUMER).pending() == 0 and PairConsumer(client, CONSUMER).waiting() == 0
    assert not list(tmp_path.glob("versions/.*.partial"))
    rounds = client.xrange(keys.TRAINER_ROUNDS)
    assert json.loads(rounds[-1][1]["round"])["id"] == version.id


def test_second_trainer_waits_for_the_lock(redis_server: RedisHandle, tmp_path: Path, model_path: Path) -> None:
    seed_pairs(redis_server.client(), 2)
    redis_server.client().set(keys.TRAINER_LOCK, "someone-else", px=60_000)
    command, env = train_command(redis_server, tmp_path, model_path)
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert "another trainer holds the lock" in done.stdout
    assert Registry(redis_server.client()).all() == []
