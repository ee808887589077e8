"""Progress bars for a round's long stages, on a terminal and on the main process only (the other processes of an
``accelerate launch`` would draw the same bars again: ``trainer/distributed.py: progress_disabled``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import torch
from tqdm.auto import tqdm
from transformers.generation.streamers import BaseStreamer

from trainer.distributed import progress_disabled

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
    return tqdm(items, desc=desc, total=total, disable=progress_disabled())


class TokenProgress(BaseStreamer):
    """A bar over the decoding steps of one ``generate`` call: a batch's answers are sampled together, one token
    per step, so the steps are its progress. ``generate`` hands a streamer the prompts first, then each step's
    tokens."""

    def __init__(self, bar: tqdm):
        self.bar = bar
        self.prompts_seen = False

    @classmethod
    def shown(cls, desc: str, max_new_tokens: int) -> TokenProgress | None:
        """A streamer for ``generate``; None where the bar is not shown, so that generation copies no token to
        the host for it."""
        bar = tqdm(total=max_new_tokens, desc=desc, unit="token", disable=progress_disabled())
        return None if bar.disable else cls(bar)

    def put(self, value: torch.Tensor) -> None:
        if self.prompts_seen:
            self.bar.update(1)
        self.prompts_seen = True

    def end(self) -> None:
        self.bar.close()
