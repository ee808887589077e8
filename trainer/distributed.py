"""Where the trainer computes, and the few rules that keep several trainer processes in step.

``chatloop train --once`` on its own is one process: on the CUDA GPU when there is one, on the CPU otherwise.
``accelerate launch --multi_gpu --num_processes N -m client.cli train --once`` starts N processes that train
data-parallel: each takes its share of every batch, and DDP averages their gradients, so every process holds the
same weights after each step.

Redis and the version folder belong to the main process alone (the lock, reading and acknowledging pairs, the
registry, the round's record): it does that work and hands the result to the others (``main_then_share``). Every
process must make the same collective calls in the same order (DDP's gradient all-reduce, gathers, broadcasts),
or they wait for each other forever; that is why shares are padded to the same length on every process.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

T = TypeVar("T")


@functools.cache
def get_accelerator() -> Accelerator:
    """This process's Accelerator, built on first use (so that ``chatloop --help`` starts no process group).

    Without CUDA it is told to use the CPU: accelerate forms a CPU process group (gloo) only when asked to, and
    without one N launched processes would each train alone and each take itself for the main process.
    """
    return Accelerator(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    return get_accelerator().is_main_process


def process_seed(seed: int) -> int:
    """The seed for sampling that must differ between processes: the configured seed on the main process (so a
    single process samples exactly as it always did), offset by the process index on the others."""
    return seed + get_accelerator().process_index


def progress_disabled() -> bool | None:
    """tqdm's ``disable``: progress bars on the main process only (None lets tqdm show them on a terminal)."""
    return None if is_main_process() else True


def main_then_share(work: Callable[[], T]) -> T:
    """``work()`` on the main process only; every process gets its result (which must pickle).

    If the work fails, every process raises the same exception, so that none waits for the others in a collective
    call they will never make.
    """
    accelerator = get_accelerator()
    if accelerator.num_processes == 1:
        return work()
    box: list[object] = [None]
    if accelerator.is_main_process:
        try:
            box[0] = (True, work())
        except Exception as exc:
            box[0] = (False, exc)
    broadcast_object_list(box, from_process=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


@dataclass
class Share(Generic[T]):
    """One process's part of a list that all processes hold."""

    items: list[T]
    """As many items on every process: the process's own, then repeats of the list's last item as padding."""
    real: int
    """How many of ``items`` are the process's own."""

    def real_mask(self, device: torch.device | str) -> torch.Tensor:
        """1.0 for the process's own items, 0.0 for padding: a weight that cancels the padding in a loss."""
        return (torch.arange(len(self.items), device=device) < self.real).float()


def share_of(items: Sequence[T], index: int, processes: int) -> Share[T]:
    """Process ``index``'s contiguous part of ``items``; one process gets them all, in order."""
    size = math.ceil(len(items) / processes)
    own = list(items[index * size : (index + 1) * size])
    padding = [items[-1]] * (size - len(own)) if len(own) < size else []
    return Share(own + padding, len(own))


def process_share(items: Sequence[T]) -> Share[T]:
    accelerator = get_accelerator()
    return share_of(items, accelerator.process_index, accelerator.num_processes)


def gather_real(values: torch.Tensor, share: Share) -> torch.Tensor:
    """Every process's rows of ``values`` for its own items, concatenated in the order of the shared list (the
    padding dropped): the same tensor on every process."""
    accelerator = get_accelerator()
    counts = accelerator.gather(torch.tensor([share.real], device=values.device)).tolist()
    chunks = accelerator.gather(values).split(len(share.items))
    return torch.cat([chunk[:count] for chunk, count in zip(chunks, counts, strict=True)])


def mean_across_processes(figures: dict[str, float]) -> dict[str, float]:
    """Each figure averaged over the processes (one all-reduce), so that every process reports the same ones."""
    accelerator = get_accelerator()
    values = torch.tensor(list(figures.values()), dtype=torch.float64, device=accelerator.device)
    return dict(zip(figures, accelerator.reduce(values, reduction="mean").tolist(), strict=True))
