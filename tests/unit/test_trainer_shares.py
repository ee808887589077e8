"""How the trainer splits a list between processes, and what a single process does with the helpers."""

from __future__ import annotations

import pytest
import torch

from trainer.distributed import Share, gather_real, main_then_share, mean_across_processes, share_of


@pytest.mark.parametrize(("length", "processes"), [(7, 3), (1, 2), (4, 2), (5, 4), (3, 1)])
def test_shares_have_one_length_and_cover_the_list_in_order(length: int, processes: int) -> None:
    items = list(range(length))
    shares = [share_of(items, index, processes) for index in range(processes)]
    assert len({len(share.items) for share in shares}) == 1, "every process must run as many passes"
    assert [item for share in shares for item in share.items[: share.real]] == items
    assert all(item == items[-1] for share in shares for item in share.items[share.real :])


def test_one_process_gets_everything() -> None:
    share = share_of(["a", "b", "c"], 0, 1)
    assert share == Share(["a", "b", "c"], 3)
    assert share.real_mask("cpu").tolist() == [1.0, 1.0, 1.0]


def test_padding_weighs_nothing() -> None:
    assert share_of([1, 2, 3], 1, 2).real_mask("cpu").tolist() == [1.0, 0.0]


def test_a_single_process_runs_the_work_and_keeps_its_figures() -> None:
    assert main_then_share(lambda: {"answer": 42}) == {"answer": 42}
    figures = {"reward": 0.1 + 0.2, "kl": 1e-9, "epochs": 3.0}
    assert mean_across_processes(figures) == figures
    values = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(gather_real(values, Share([0, 1, 2], 3)), values)
