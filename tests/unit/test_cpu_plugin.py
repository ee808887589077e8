"""Our vLLM plugin: in vLLM's scheduler process on the CPU backend, readers of the worker's messages never spin, and
never wait long for a notification that may have been lost; everywhere else they behave as shipped."""

from __future__ import annotations

import multiprocessing
import time
from importlib.metadata import entry_points

import pytest
import zmq
from vllm.distributed.device_communicators.shm_broadcast import SpinCondition
from vllm.utils.network_utils import get_open_zmq_ipc_path

from server.cpu.plugin import RECHECK_MS, register

IDLE_WAIT_MS = 300


def reader_spin_seconds(results: multiprocessing.Queue) -> None:
    """In a process of the given name: vLLM loads its plugins, then creates a writer and a reader; the reader, idle
    (no read for long), waits for a notification that never comes."""
    register()
    context = zmq.Context()
    address = get_open_zmq_ipc_path()
    writer = SpinCondition(is_reader=False, context=context, notify_address=address)
    reader = SpinCondition(is_reader=True, context=context, notify_address=address)
    reader.last_read = 0.0
    started = time.monotonic()
    reader.wait(timeout_ms=IDLE_WAIT_MS)
    waited_ms = 1000 * (time.monotonic() - started)
    results.put((reader.busy_loop_s, writer.busy_loop_s, waited_ms))


@pytest.mark.parametrize(
    ("process", "reader_spins"),
    [("EngineCore", False), ("EngineCore_DP0", False), ("VllmWorker-0", True), ("MainProcess", True)],
)
def test_only_the_scheduler_process_waits_without_spinning_and_rechecks_soon(process: str, reader_spins: bool) -> None:
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    child = spawn.Process(target=reader_spin_seconds, args=(results,), name=process)
    child.start()
    reader_busy_loop_s, writer_busy_loop_s, waited_ms = results.get(timeout=120)
    child.join()
    assert (reader_busy_loop_s > 0) is reader_spins
    assert writer_busy_loop_s == 0
    if reader_spins:  # as shipped: an idle reader waits for the notification as long as it is told
        assert waited_ms >= IDLE_WAIT_MS * 0.9
    else:  # a lost notification costs RECHECK_MS, not the rest of the timeout
        assert waited_ms < IDLE_WAIT_MS / 3 and RECHECK_MS < IDLE_WAIT_MS / 3


def test_vllm_finds_the_plugin() -> None:
    plugins = {entry.name: entry.value for entry in entry_points(group="vllm.general_plugins")}
    assert plugins.get("chatloop_cpu_wait") == "server.cpu.plugin:register"
