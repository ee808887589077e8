"""A policy version's folder, written atomically: built under a hidden ``.partial`` name, then renamed.

A round killed while writing leaves only a ``.partial`` folder, which no reader takes for a version and the next
round removes. Layout: ``adapter/`` (PEFT LoRA of the policy), ``reward_model/`` (the reward model it was trained
against), ``version.json`` (id, parent, hyperparameters, metrics, gate result, the ids of the pairs it used, and
the SHA-256 of every other file, which a server checks before it loads them: ``core/checksums.py``). Everything is
on the disk before the rename.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from peft import PeftModel

from core.checksums import VERSION_INFO, folder_digests, sync_folder_entry, sync_tree
from core.policy import ADAPTER_DIRNAME, TRAINEES_DIRNAME
from trainer.reward import RewardModel

REWARD_MODEL = "reward_model"


def remove_partials(versions_dir: Path) -> None:
    """What a killed round left: half-written versions, and adapters it had saved for the engine's rollouts."""
    for partial in versions_dir.glob(".*.partial"):
        shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(versions_dir / TRAINEES_DIRNAME, ignore_errors=True)


def highest_version(versions_dir: Path) -> int:
    """The number of the highest version folder (0 with none)."""
    numbers = [int(path.name[1:]) for path in versions_dir.glob("v*") if path.name[1:].isdigit() and path.is_dir()]
    return max(numbers, default=0)


def write_version(versions_dir: Path, version_id: str, policy: PeftModel, reward: RewardModel, info: dict) -> Path:
    final = versions_dir / version_id
    staging = versions_dir / f".{version_id}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        policy.save_pretrained(staging / ADAPTER_DIRNAME)
        reward.save(staging / REWARD_MODEL)
        checksums = folder_digests(staging, ADAPTER_DIRNAME, REWARD_MODEL)
        (staging / VERSION_INFO).write_text(json.dumps(info | {"checksums": checksums}, indent=2, default=str))
        sync_tree(staging)
        staging.rename(final)
    except BaseException:  # a full disk, among others: nothing half-written stays
        shutil.rmtree(staging, ignore_errors=True)
        raise
    sync_folder_entry(final)
    return final
