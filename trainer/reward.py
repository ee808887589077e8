"""The reward model: the base model with a scalar head (InstructGPT's choice), trained on preference pairs.

Written here rather than with TRL's ``RewardTrainer`` because our pairs carry weights (a comparison counts more
than an inferred preference, ``feedback/rules.py``) and ``RewardTrainer``'s loss has no per-pair weight. The
loss is ``trainer.losses.bradley_terry_loss``. Only a LoRA adapter on the top layers and the head are trained, so
that backpropagation stops there: practical on a CPU. The score is read at the last token, with left padding so
that the last position is always a real token. An answer cut off by its token limit is shown without the
end-of-turn token (``trainer/chat_text.py``), as its user saw it: broken off.

The model continues from the previous round's when there is one (``RewardSettings.warm_start``): a round's few
hundred pairs are too few to learn a preference afresh each time, and what earlier rounds learnt would be lost.
Pairs whose prompt is held out (``trainer/data.py: is_held_out``) are never trained on in any round, so its
held-out accuracy and calibration are measured on prompts it has not seen.

Its scores have an arbitrary offset and scale, which change from round to round. ``ScoreScale``, fitted on the
parent policy's own answers each round and saved with the model, puts them on a fixed scale (mean 0, standard
deviation 1 over those answers), so that PPO's KL coefficient and the gate's tolerance mean the same every round.

Under ``accelerate launch`` every process holds all pairs and takes its share of each batch; each share's loss is
scaled so that DDP's average of the processes' gradients is the gradient of the whole batch's loss, as one process
would compute it. Held-out pairs are scored in shares too and the margins gathered.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from pydantic import BaseModel
from transformers import AutoConfig, PreTrainedTokenizerBase

from core.config import RewardSettings, ToolSettings
from feedback.pairs import Pair, PairAnswer
from trainer.chat_text import Prompt, conversation_text
from trainer.distributed import gather_real, get_accelerator, mean_across_processes, process_share
from trainer.losses import bradley_terry_loss
from trainer.models import load_backbone, load_tokenizer
from trainer.progress import progress

log = logging.getLogger(__name__)

HEAD_FILE = "head.pt"
SCALE_FILE = "scale.json"
MIN_SPREAD = 1e-3
"""Scores closer together than this are not spread out to unit deviation: they carry no signal to amplify."""


class ScoreScale(BaseModel):
    """Raw score -> (raw - mean) / deviation."""

    mean: float = 0.0
    deviation: float = 1.0

    @classmethod
    def fit(cls, scores: Sequence[float]) -> ScoreScale:
        """Fitted on the policy's own answers: a constant added to every score changes nothing after it."""
        deviation = statistics.pstdev(scores) if len(scores) > 1 else 0.0
        return cls(mean=statistics.fmean(scores), deviation=deviation if deviation > MIN_SPREAD else 1.0)

    def apply(self, scores: torch.Tensor) -> torch.Tensor:
        return (scores - self.mean) / self.deviation


class RewardMetrics(BaseModel):
    train_pairs: int
    held_out_pairs: int
    warm_started: bool = False
    held_out_accuracy: float | None
    """Share of held-out pairs whose chosen answer scores higher; None without held-out pairs."""
    held_out_margin: float | None
    """Mean score(chosen) - score(rejected) over held-out pairs."""
    held_out_log_loss: float | None = None
    """Calibration: mean -log sigmoid(margin), the loss of the probability the model gives the user's choice (log 2
    = 0.69 for a model that knows nothing; lower is better)."""
    held_out_brier: float | None = None
    """Calibration: mean (1 - sigmoid(margin))^2 (0.25 for a model that knows nothing; lower is better)."""
    final_loss: float | None
    """None when there was nothing to train on."""


def lora_config(layers: int, settings: RewardSettings) -> LoraConfig:
    """LoRA on the attention and MLP projections of the top ``settings.top_layers`` of ``layers``."""
    top = "|".join(str(i) for i in range(max(0, layers - settings.top_layers), layers))
    return LoraConfig(
        r=settings.lora_rank,
        lora_alpha=2 * settings.lora_rank,
        target_modules=rf".*layers\.({top})\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)",
    )


class RewardModel(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, max_length: int):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.head = torch.nn.Linear(backbone.config.hidden_size, 1)
        self.scale = ScoreScale()

    @classmethod
    def create(cls, base: Path, settings: RewardSettings, tools: ToolSettings) -> RewardModel:
        backbone = load_backbone(base)
        lora = lora_config(backbone.config.num_hidden_layers, settings)
        model = cls(get_peft_model(backbone, lora), load_tokenizer(base, tools), settings.max_length)
        return model.to(get_accelerator().device)

    @classmethod
    def load(
        cls, base: Path, folder: Path, max_length: int, tools: ToolSettings, trainable: bool = False
    ) -> RewardModel:
        backbone = PeftModel.from_pretrained(load_backbone(base), folder, is_trainable=trainable)
        model = cls(backbone, load_tokenizer(base, tools), max_length)
        model.head.load_state_dict(torch.load(folder / HEAD_FILE, weights_only=True))
        if (folder / SCALE_FILE).exists():
            model.scale = ScoreScale.model_validate_json((folder / SCALE_FILE).read_text())
        return model.to(get_accelerator().device).eval()

    def save(self, folder: Path) -> None:
        self.backbone.save_pretrained(folder)
        torch.save(self.head.state_dict(), folder / HEAD_FILE)
        (folder / SCALE_FILE).write_text(self.scale.model_dump_json())

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(
            list(texts), return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
        )
        batch = batch.to(self.head.weight.device)
        hidden = self.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        return self.head(hidden[:, -1]).squeeze(-1)

    @torch.no_grad()
    def score(
        self, prompts: Sequence[Prompt], answers: Sequence[str], ended: Sequence[bool], batch_size: int = 8
    ) -> torch.Tensor:
        """Rewards of answers to prompts, on the model's ``scale``; an answer that did not
        end was cut off by its token limit."""
        self.eval()
        rows = zip(prompts, answers, ended, strict=True)
        texts = [conversation_text(self.tokenizer, p, a, e) for p, a, e in rows]
        raw = torch.cat([self.forward(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])
        return self.scale.apply(raw)


@dataclass
class _PairTexts:
    chosen: list[str]
    rejected: list[str]
    weights: torch.Tensor


def _texts(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[Pair]) -> _PairTexts:
    def text(pair: Pair, answer: PairAnswer) -> str:
        return conversation_text(tokenizer, Prompt.of_pair(pair), answer.text, answer.ended)

    return _PairTexts(
        chosen=[text(pair, pair.chosen) for pair in pairs],
        rejected=[text(pair, pair.rejected) for pair in pairs],
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


class HeldOut(BaseModel):
    accuracy: float | None = None
    margin: float | None = None
    log_loss: float | None = None
    brier: float | None = None


def held_out_figures(margins: torch.Tensor) -> HeldOut:
    """Accuracy, mean margin and calibration of score(chosen) - score(rejected) over held-out pairs."""
    if not len(margins):
        return HeldOut()
    margins = margins.double()
    return HeldOut(
        accuracy=(margins > 0).double().mean().item(),
        margin=margins.mean().item(),
        log_loss=-torch.nn.functional.logsigmoid(margins).mean().item(),
        brier=((1 - torch.sigmoid(margins)) ** 2).mean().item(),
    )


@torch.no_grad()
def evaluate(model: RewardModel, pairs: Sequence[Pair]) -> HeldOut:
    """Held-out figures, the same on every process."""
    if not pairs:
        return HeldOut()
    model.eval()
    share = process_share(pairs)
    texts = _texts(model.tokenizer, share.items)
    return held_out_figures(gather_real(model.forward(texts.chosen) - model.forward(texts.rejected), share))


def previous_model(
    base: Path, folder: Path | None, settings: RewardSettings, tools: ToolSettings
) -> RewardModel | None:
    """The previous round's reward model to continue, if it was trained on this base model and the same layers."""
    if folder is None or not settings.warm_start or not (folder / HEAD_FILE).exists():
        return None
    saved = json.loads((folder / "adapter_config.json").read_text())
    wanted = lora_config(AutoConfig.from_pretrained(base).num_hidden_layers, settings)
    if (saved.get("base_model_name_or_path"), saved.get("r"), saved.get("target_modules")) != (
        str(base),
        wanted.r,
        wanted.target_modules,
    ):
        log.info("reward model made afresh: the previous one was for another model", extra={"folder": str(folder)})
        return None
    model = RewardModel.load(base, folder, settings.max_length, tools, trainable=True)
    model.scale = ScoreScale()  # fitted to the previous model's scores: the round fits its own
    return model


def train_reward_model(
    base: Path,
    train: Sequence[Pair],
    held_out: Sequence[Pair],
    settings: RewardSettings,
    tools: ToolSettings,
    seed: int,
    previous: Path | None = None,
) -> tuple[RewardModel, RewardMetrics]:
    """The same pairs on every process give the same model on every process; ``batch_size`` counts the pairs of a
    step on all processes together, so the settings mean the same on any number of them. ``previous`` is the
    previous round's reward model folder, continued when it fits."""
    accelerator = get_accelerator()
    torch.manual_seed(seed)
    model = previous_model(base, previous, settings, tools)
    warm = model is not None
    model = model or RewardModel.create(base, settings, tools)
    epochs = settings.warm_epochs if warm else settings.epochs
    trainable = [p for p in model.parameters() if p.requires_grad]
    wrapped, optimizer = accelerator.prepare(model, torch.optim.AdamW(trainable, lr=settings.learning_rate))
    order = list(range(len(train)))
    rng = random.Random(seed)
    loss = None
    final_loss = None
    for epoch in range(epochs):
        wrapped.train()
        rng.shuffle(order)
        batches = range(0, len(order), settings.batch_size)
        for start in progress(batches, f"reward model epoch {epoch + 1}/{epochs}"):
            loss = _share_loss(wrapped, model.tokenizer, [train[i] for i in order[start : start + settings.batch_size]])
            optimizer.zero_grad()
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
        if loss is not None:
            final_loss = mean_across_processes({"loss": loss.item()})["loss"]
            log.info("reward model epoch", extra={"epoch": epoch, "loss": round(final_loss, 4)})
    model = accelerator.unwrap_model(wrapped)
    figures = evaluate(model, held_out)
    metrics = RewardMetrics(
        train_pairs=len(train),
        held_out_pairs=len(held_out),
        warm_started=warm,
        held_out_accuracy=figures.accuracy,
        held_out_margin=figures.margin,
        held_out_log_loss=figures.log_loss,
        held_out_brier=figures.brier,
        final_loss=final_loss,
    )
    log.info("reward model trained", extra=metrics.model_dump())
    return model.eval(), metrics
