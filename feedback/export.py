"""Export preference pairs as JSON lines in TRL's conversational preference format.

Each line: ``prompt`` (the conversation's messages), ``chosen`` and ``rejected`` (each a list holding the one
assistant message), ``tools`` where the model was given tools (as TRL's conversational datasets hold them), and flat
metadata columns, so that ``datasets.load_dataset("json", data_files=...)`` and TRL's
``RewardTrainer`` read the file as it is. Export reads the stream directly and acknowledges nothing: it never
takes pairs away from the trainer.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import redis

from feedback.pairs import Pair, read_all


def trl_row(pair: Pair) -> dict[str, object]:
    tools = {"tools": pair.tools} if pair.tools else {}
    return {
        "prompt": [message.model_dump() for message in pair.prompt],
        **tools,
        "chosen": [{"role": "assistant", "content": pair.chosen.text}],
        "rejected": [{"role": "assistant", "content": pair.rejected.text}],
        "pair_id": pair.pair_id,
        "rule": pair.rule,
        "weight": pair.weight,
        "chosen_version": pair.chosen.version,
        "rejected_version": pair.rejected.version,
        "chosen_completion_id": pair.chosen.completion_id,
        "rejected_completion_id": pair.rejected.completion_id,
        "conversation_id": pair.conversation_id,
        "user_id": pair.user_id,
        "created": pair.created,
    }


def export_pairs(client: redis.Redis, out: Path, since: datetime | None = None, version: str | None = None) -> int:
    """Write the pairs made since ``since`` (all if None) whose answers include one of ``version``; return how many."""
    start = f"{int(since.timestamp() * 1000)}-0" if since is not None else "-"
    written = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as file:
        for _, pair in read_all(client, start=start):
            if version is not None and version not in (pair.chosen.version, pair.rejected.version):
                continue
            file.write(json.dumps(trl_row(pair), ensure_ascii=False) + "\n")
            written += 1
    return written
