"""The trainer on two processes of ``accelerate launch`` (CPU, gloo), on a tiny randomly initialised Llama.

The processes answer different prompts, so their gradients differ: only if DDP averages them do their weights stay
identical. The round itself runs through the real command against a real Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from core import keys
from core.registry import Registry
from feedback.pairs import PairConsumer
from tests.factories import seed_pairs
from tests.helpers import REPO, SMALL_ROUND, RedisHandle, free_port
from trainer.context import CONSUMER

pytestmark = pytest.mark.integration

PROCESSES = 2
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Path:
    """A 2-layer Llama with hidden size 64 and the default model's tokenizer (and chat template)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def launch(module_and_args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``accelerate launch`` of two processes on the CPU: ``--multi_gpu`` is its launcher for several processes on
    one machine (``--cpu`` starts one, or needs MPI); without a visible GPU the trainer joins them with gloo."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(PROCESSES),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        *module_and_args,
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def cpu_env(tmp_path: Path) -> dict[str, str]:
    """No GPU (two processes on one would collide) and no user accelerate config (HF_HOME holds it)."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HOME": str(tmp_path / "hf")}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_processes_learn_from_different_data_and_stay_identical(tiny_model: Path, tmp_path: Path) -> None:
    launch(["tests.integration.ddp_worker", str(tiny_model), str(tmp_path)], cpu_env(tmp_path))
    first, second = (torch.load(tmp_path / f"rank{i}.pt") for i in range(PROCESSES))
    assert first["processes"] == second["processes"] == PROCESSES

    assert first["local_reward"] != second["local_reward"], "the processes answered the same prompts"
    for name in ("reward_model", "after_sft", "after_dpo", "final", "value_head"):
        assert same(first[name], second[name]), f"the processes' {name} weights diverged"
    assert same(first["initial"], second["initial"])
    assert not same(first["initial"], first["after_sft"]), "the supervised stage changed no adapter weight"
    assert not same(first["after_sft"], first["after_dpo"]), "the preference stage changed no adapter weight"
    assert not same(first["after_dpo"], first["final"]), "the PPO update changed no adapter weight"

    mean = (first["local_reward"] + second["local_reward"]) / 2
    assert first["stats"] == second["stats"]
    assert first["stats"]["reward"] == pytest.approx(mean, abs=1e-6)
    for name in ("reward_metrics", "sft_losses", "dpo_losses", "parent_eval", "candidate_eval"):
        assert first[name] == second[name], f"the processes report different {name}"


def test_train_once_under_accelerate_launch(redis_server: RedisHandle, tiny_model: Path, tmp_path: Path) -> None:
    pair_ids = seed_pairs(redis_server.client(), 6)
    env = {
        **cpu_env(tmp_path),
        **SMALL_ROUND,
        "REDIS_URL": redis_server.url,
        "CHATLOOP_DATA_DIR": str(tmp_path),
        "CHATLOOP_MODEL": str(tiny_model),
        "CHATLOOP_SUPERVISED__EPOCHS": "1",
    }
    done = launch(["client.cli", "train", "--once"], env)

    client = redis_server.client()
    (version,) = Registry(client).all()
    assert done.stdout.strip() == f"{version.id} {version.state}: {version.audit[-1].why}", "printed once, by main"
    assert done.stderr.count("round done") == 1, "the other process logged the round too"
    info = json.loads((Path(version.artifact) / "version.json").read_text())
    assert info["hyperparameters"]["processes"] == PROCESSES
    assert sorted(info["pairs"]) == sorted(pair_ids)
    assert PairConsumer(client, CONSUMER).pending() == 0 and PairConsumer(client, CONSUMER).waiting() == 0
    assert json.loads(client.xrange(keys.TRAINER_ROUNDS)[-1][1]["round"])["id"] == version.id
    assert not client.exists(keys.TRAINER_LOCK)
