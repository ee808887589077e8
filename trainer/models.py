"""Loading the base model, its tokenizer and the policy's LoRA adapter: what the reward model, PPO, the fine-tuning
stages, the benchmarks and the tests' synthetic versions share.

The trainer computes in float32 whatever dtype the model folder holds (the default model is stored in bfloat16:
``core/default_model.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from core.chat_template import tool_template
from core.config import PPOSettings, ToolSettings
from trainer.distributed import get_accelerator

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
"""The policy adapter's modules: every attention and MLP projection of every layer."""


def load_causal_lm(base: Path) -> PreTrainedModel:
    """The base model with its language-model head, on the CPU."""
    return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)


def load_backbone(base: Path) -> PreTrainedModel:
    """The base model without its language-model head (the reward model puts a scalar head on it), on the CPU."""
    return AutoModel.from_pretrained(base, dtype=torch.float32)


def load_tokenizer(base: Path, tools: ToolSettings) -> PreTrainedTokenizerBase:
    """Padding and truncation on the left: a batch's last position is always a real token (where the reward model
    reads its score and generation continues), and truncation keeps the answer, the part being judged. The tool
    template the server renders tools with is the tokenizer's ``tool_use`` template (``trainer/chat_text.py``)."""
    tokenizer = AutoTokenizer.from_pretrained(base)
    own = tokenizer.chat_template
    templates = own if isinstance(own, dict) else {"default": own}
    tokenizer.chat_template = templates | {"tool_use": tool_template(tools.chat_template)}
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(base: Path, parent_adapter: Path | None, settings: PPOSettings) -> PeftModel:
    """The base model with the parent's adapter, continued (or a fresh adapter over the base), on this process's
    device."""
    model = load_causal_lm(base).to(get_accelerator().device)
    if parent_adapter is not None:
        return PeftModel.from_pretrained(model, parent_adapter, is_trainable=True)
    lora = LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha, target_modules=LORA_TARGETS)
    return get_peft_model(model, lora)
