"""The reward model: the base model with a scalar head (InstructGPT's choice), trained on preference pairs.

Written here rather than with TRL's ``RewardTrainer`` because our pairs carry weights (a comparison counts more
than an inferred preference, ``feedback/rules.py``) and ``RewardTrainer``'s loss has no per-pair weight. The
loss is ``trainer.losses.bradley_terry_loss``. Only a LoRA adapter on the top layers and the head are trained, so
that backpropagation stops there: practical on a CPU. The score is read at the last token, with left padding so
that the last position is always a real token.

Under ``accelerate launch`` every process holds all pairs and takes its share of each batch; each share's loss is
scaled so that DDP's average of the processes' gradients is the gradient of the whole batch's loss, as one process
would compute it. Held-out pairs are scored in shares too and the margins gathered.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from pydantic import BaseModel
from transformers import PreTrainedTokenizerBase

from core.config import RewardSettings
from feedback.pairs import Pair
from trainer.distributed import gather_real, get_accelerator, mean_across_processes, process_share
from trainer.losses import bradley_terry_loss
from trainer.models import load_backbone, load_tokenizer
from trainer.progress import progress

log = logging.getLogger(__name__)

HEAD_FILE = "head.pt"


class RewardMetrics(BaseModel):
    train_pairs: int
    held_out_pairs: int
    held_out_accuracy: float | None
    """Share of held-out pairs whose chosen answer scores higher; None without held-out pairs."""
    held_out_margin: float | None
    """Mean score(chosen) - score(rejected) over held-out pairs."""
    final_loss: float


def split_by_conversation(pairs: Sequence[Pair], held_out_share: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Train and held-out pairs, never splitting one conversation's pairs: they share a prompt and would leak."""
    conversations = sorted({pair.conversation_id for pair in pairs})
    random.Random(seed).shuffle(conversations)
    held = set(conversations[: round(len(conversations) * held_out_share)])
    return [p for p in pairs if p.conversation_id not in held], [p for p in pairs if p.conversation_id in held]


def conversation_text(tokenizer: PreTrainedTokenizerBase, prompt: Sequence[dict], answer: str) -> str:
    messages = [*prompt, {"role": "assistant", "content": answer}]
    return tokenizer.apply_chat_template(messages, tokenize=False)


class RewardModel(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, max_length: int):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.head = torch.nn.Linear(backbone.config.hidden_size, 1)

    @classmethod
    def create(cls, base: Path, settings: RewardSettings) -> RewardModel:
        backbone = load_backbone(base)
        layers = backbone.config.num_hidden_layers
        top = "|".join(str(i) for i in range(max(0, layers - settings.top_layers), layers))
        lora = LoraConfig(
            r=settings.lora_rank,
            lora_alpha=2 * settings.lora_rank,
            target_modules=rf".*layers\.({top})\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)",
        )
        model = cls(get_peft_model(backbone, lora), load_tokenizer(base), settings.max_length)
        return model.to(get_accelerator().device)

    @classmethod
    def load(cls, base: Path, folder: Path, max_length: int) -> RewardModel:
        backbone = PeftModel.from_pretrained(load_backbone(base), folder)
        model = cls(backbone, load_tokenizer(base), max_length)
        model.head.load_state_dict(torch.load(folder / HEAD_FILE, weights_only=True))
        return model.to(get_accelerator().device).eval()

    def save(self, folder: Path) -> None:
        self.backbone.save_pretrained(folder)
        torch.save(self.head.state_dict(), folder / HEAD_FILE)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(
            list(texts), return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
        )
        batch = batch.to(self.head.weight.device)
        hidden = self.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        return self.head(hidden[:, -1]).squeeze(-1)

    @torch.no_grad()
    def score(self, prompts: Sequence[Sequence[dict]], answers: Sequence[str], batch_size: int = 8) -> torch.Tensor:
        """Rewards of answers to prompts (lists of chat messages)."""
        self.eval()
        texts = [conversation_text(self.tokenizer, p, a) for p, a in zip(prompts, answers, strict=True)]
        return torch.cat([self.forward(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])


@dataclass
class _PairTexts:
    chosen: list[str]
    rejected: list[str]
    weights: torch.Tensor


def _texts(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[Pair]) -> _PairTexts:
    prompt = [[m.model_dump() for m in pair.prompt] for pair in pairs]
    return _PairTexts(
        chosen=[conversation_text(tokenizer, p, pair.chosen.text) for p, pair in zip(prompt, pairs, strict=True)],
        rejected=[conversation_text(tokenizer, p, pair.rejected.text) for p, pair in zip(prompt, pairs, strict=True)],
        weights=torch.tensor([pair.weight for pair in pairs], device=get_accelerator().device),
    )


def _share_loss(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, batch: Sequence[Pair]) -> torch.Tensor:
    """This process's part of the batch's loss, times the number of processes: DDP averages the processes'
    gradients (and the mean of these losses is the batch's loss), so the step is the one a single process would
    take on the whole batch. Padding pairs weigh nothing."""
    share = process_share(batch)
    texts = _texts(tokenizer, share.items)
    weights = texts.weights * share.real_mask(texts.weights.device)
    total = sum(pair.weight for pair in batch)
    loss = bradley_terry_loss(model(texts.chosen), model(texts.rejected), weights, total)
    return loss * get_accelerator().num_processes


@torch.no_grad()
def evaluate(model: RewardModel, pairs: Sequence[Pair]) -> tuple[float | None, float | None]:
    """Held-out accuracy and mean margin, the same on every process."""
    if not pairs:
        return None, None
    model.eval()
    share = process_share(pairs)
    texts = _texts(model.tokenizer, share.items)
    margins = gather_real(model.forward(texts.chosen) - model.forward(texts.rejected), share)
    return (margins > 0).float().mean().item(), margins.mean().item()


def train_reward_model(
    base: Path, pairs: Sequence[Pair], settings: RewardSettings, seed: int
) -> tuple[RewardModel, RewardMetrics]:
    """The same pairs on every process give the same model on every process; ``batch_size`` counts the pairs of a
    step on all processes together, so the settings mean the same on any number of them."""
    accelerator = get_accelerator()
    torch.manual_seed(seed)
    train, held_out = split_by_conversation(pairs, settings.held_out_share, seed)
    model = RewardModel.create(base, settings)
    trainable = [p for p in model.parameters() if p.requires_grad]
    wrapped, optimizer = accelerator.prepare(model, torch.optim.AdamW(trainable, lr=settings.learning_rate))
    order = list(range(len(train)))
    rng = random.Random(seed)
    loss = torch.tensor(float("nan"))
    final_loss = float("nan")
    for epoch in range(settings.epochs):
        wrapped.train()
        rng.shuffle(order)
        batches = range(0, len(order), settings.batch_size)
        for start in progress(batches, f"reward model epoch {epoch + 1}/{settings.epochs}"):
            loss = _share_loss(wrapped, model.tokenizer, [train[i] for i in order[start : start + settings.batch_size]])
            optimizer.zero_grad()
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
        final_loss = mean_across_processes({"loss": loss.item()})["loss"]
        log.info("reward model epoch", extra={"epoch": epoch, "loss": round(final_loss, 4)})
    model = accelerator.unwrap_model(wrapped)
    accuracy, margin = evaluate(model, held_out)
    metrics = RewardMetrics(
        train_pairs=len(train),
        held_out_pairs=len(held_out),
        held_out_accuracy=accuracy,
        held_out_margin=margin,
        final_loss=final_loss,
    )
    log.info("reward model trained", extra=metrics.model_dump())
    return model.eval(), metrics
