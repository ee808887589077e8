"""Synthetic data for tests and benchmarks: policy versions whose LoRA adapters have random weights (they change the
answers, which is all that routing and weight swaps need, without minutes of training), and preference pairs with
a preference any reward model can learn in a few steps."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import redis
import torch
from peft import LoraConfig, get_peft_model

from core import keys
from core.checksums import VERSION_INFO, folder_digests
from core.policy import ADAPTER_DIRNAME
from core.registry import Registry, Version
from feedback.pairs import Pair, PairAnswer
from feedback.records import CompletionRecord, RecordedChoice, RecordedMessage
from tests.helpers import IDS
from trainer.models import LORA_TARGETS, load_causal_lm

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city today.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
"""A function tool as the OpenAI SDK sends it."""

TOPICS = [
    "the sea",
    "a cat",
    "bread",
    "rain",
    "music",
    "trees",
    "winter",
    "coffee",
    "a city",
    "the moon",
    "bicycles",
    "chess",
    "honey",
    "a river",
    "snow",
    "stars",
    "tea",
    "a garden",
]


def short_over_long_pair(index: int, weight: float = 1.0) -> Pair:
    """A synthetic preference: the short answer over the long one. Everything but the timestamps follows from
    ``index``, so that the processes of one ``accelerate launch`` build the same pairs."""
    topic = TOPICS[index % len(TOPICS)]
    answer = lambda text, side: PairAnswer(completion_id=f"{side}{index}", choice_index=0, text=text, version="base")  # noqa: E731
    return Pair(
        pair_id=f"pair-{index}",
        conversation_id=f"conv-{index}",
        user_id="u",
        prompt=[RecordedMessage(role="user", content=f"Tell me about {topic}. ({index})")],
        chosen=answer(f"{topic.capitalize()} is lovely.", "c"),
        rejected=answer(f"Well, {topic} is a subject about which a great deal could be said, " * 3, "r"),
        rule="comparison",
        weight=weight,
        created=time.time(),
        answered=time.time(),
    )


def seed_pairs(client: redis.Redis, count: int) -> list[str]:
    """A clean slate for a training round (no pairs, versions, trainer lock or carried pairs before), then ``count``
    synthetic pairs in the pairs stream; their ids in stream order."""
    client.delete(keys.PAIRS_STREAM, keys.VERSIONS, keys.TRAINER_LOCK, keys.TRAINER_CARRIED)
    for i in range(count):
        client.xadd(keys.PAIRS_STREAM, {"pair": short_over_long_pair(i).model_dump_json()})
    return [json.loads(fields["pair"])["pair_id"] for _, fields in client.xrange(keys.PAIRS_STREAM)]


def random_version(
    client: redis.Redis, versions_dir: Path, model_path: Path, seed: int, scale: float = 1.0, corrupt: bool = False
) -> str:
    """Register a candidate whose adapter has random weights (B scaled by ``scale``), or a corrupt weights file."""
    registry = Registry(client)
    version_id = registry.next_id()
    folder = versions_dir / version_id
    torch.manual_seed(seed)
    model = load_causal_lm(model_path)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS, init_lora_weights=False)
    peft = get_peft_model(model, lora)
    with torch.no_grad():
        for name, parameter in peft.named_parameters():
            if "lora_B" in name:
                parameter.mul_(scale)
    peft.save_pretrained(folder / ADAPTER_DIRNAME)
    (folder / VERSION_INFO).write_text(json.dumps({"checksums": folder_digests(folder, ADAPTER_DIRNAME)}))
    if corrupt:  # after the trainer's checksums: its last weights changed, as bit rot or a bad copy would
        weights = folder / ADAPTER_DIRNAME / "adapter_model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[:-64] + bytes(byte ^ 0xFF for byte in data[-64:]))
    version = Version(id=version_id, parent="base", state="candidate", artifact=str(folder), created=time.time())
    registry.register(version, who="test", why="random adapter")
    return version_id


def completion_record(
    texts: list[str],
    *,
    question: str = "Name a fruit.",
    key_id: str = "key",
    user: str | None = None,
    version: str = "base",
) -> CompletionRecord:
    """A finished answer to ``question`` with one choice per text, as the chat route records it for ``key_id`` and
    ``user`` (their ids keyed with the tests' secret)."""
    now = time.time()
    return CompletionRecord(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=now,
        finished=now,
        status="complete",
        model="chatloop",
        version=version,
        key_id=key_id,
        user=user,
        user_id=IDS.user_id(key_id, user),
        principal_id=IDS.principal_id(key_id),
        metadata={},
        stream=False,
        conversation=[RecordedMessage(role="user", content=question)],
        choices=[
            RecordedChoice(index=i, text=text, finish_reason="stop", completion_tokens=2)
            for i, text in enumerate(texts)
        ],
        params={},
        prompt_tokens=4,
        completion_tokens=2 * len(texts),
    )
