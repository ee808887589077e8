"""What the benchmarks share: start a server on a free port, wait until it answers, drive it with vLLM's client.

Servers and clients are placed as our server places itself (``server/cpu/pinning.py``): off the cores the engine's
CPU worker is bound to, for every server alike, so that figures compare HTTP layers rather than scheduling luck.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import numpy as np
import psutil
from report import REPO

from core.config import LOCAL_API_KEY, Settings
from server.cpu.pinning import pin

READY_TIMEOUT_S = 600
SERVED_NAME = "chatloop"
ALL_CORES = os.sched_getaffinity(0)
OUR_VLLM_PLUGIN = "chatloop_cpu_wait"  # pyproject.toml
ENGINE_PROCESSES = {"scheduler": "VLLM::EngineCore", "worker": "VLLM::Worker"}
"""How vLLM names its engine processes."""


@dataclass
class Server:
    url: str
    process: psutil.Process
    data_dir: Path

    @property
    def redis_url(self) -> str:
        """The local Redis our server started in its data folder."""
        return f"unix://{(self.data_dir / 'redis' / 'redis.sock').resolve()}"


def vllm_plugins_but_ours() -> dict[str, str]:
    """The environment that runs vLLM as shipped: our plugin is installed here, and vLLM loads every one it finds."""
    names = [entry.name for entry in entry_points(group="vllm.general_plugins") if entry.name != OUR_VLLM_PLUGIN]
    return {"VLLM_PLUGINS": ",".join(names)}


def worker_cores(server: psutil.Process) -> set[int]:
    """The cores vLLM's CPU worker below ``server`` is bound to (all of them on GPUs). Found by name: by the time a
    client is placed, our server has pinned its other processes to cores of their own."""
    return {
        core
        for process in server.children(recursive=True)
        if process.name() == ENGINE_PROCESSES["worker"]
        for core in process.cpu_affinity()
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chatloop_command(port: int) -> list[str]:
    return [sys.executable, "-m", "client.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]


def up_command(port: int) -> list[str]:
    """The whole system, as `make run` starts it: server, trainer loop and local Redis."""
    return [sys.executable, "-m", "client.cli", "up", "--host", "127.0.0.1", "--port", str(port)]


def wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until a one-token chat completion succeeds: the one readiness check every server answers alike."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    headers = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
    probe = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log_path}")
        try:
            if httpx.post(f"{url}/v1/chat/completions", json=probe, headers=headers, timeout=30).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise RuntimeError(f"server not ready after {READY_TIMEOUT_S} s; see {log_path}")


@contextmanager
def running(
    name: str,
    command: Callable[[int], list[str]],
    settings: Settings,
    out: Path,
    extra_env: dict[str, str] | None = None,
    replica_of: Server | None = None,
) -> Iterator[Server]:
    """A server process for the duration of the block, its log in ``out``, this process kept off engine cores.
    A replica shares the data folder and the Redis of the server it replicates."""
    # Stopped with SIGTERM (`timeout`, a CI runner), the benchmark still leaves through the block below, which stops
    # the server: started in its own session, it would otherwise outlive us, engine and memory included.
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    port = free_port()
    log_path = out / f"{name}-server.log"
    data_dir = replica_of.data_dir if replica_of else Path(tempfile.mkdtemp(prefix="chatloop-bench-"))
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_gib),
        "CHATLOOP_DATA_DIR": str(data_dir),
        "CHATLOOP_MODEL": str(settings.model_path.resolve()),
        "CHATLOOP_API_KEYS": LOCAL_API_KEY,
        "CHATLOOP_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    env.pop("REDIS_URL", None)  # ours records into its own local Redis, as `make run` does
    if replica_of is not None:
        env["REDIS_URL"] = replica_of.redis_url
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command(port),
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.sched_setaffinity(0, ALL_CORES),  # its engine binds the cores it wants
            start_new_session=True,  # Ctrl-C reaches the benchmark alone, which reports, then stops the server
        )
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        wait_ready(url, process, log_path)
        print(f"{name}: ready after {time.monotonic() - started:.0f} s at {url}", flush=True)
        server = psutil.Process(process.pid)
        # The client stays off the engine worker's cores; each server places itself as it does out of the box.
        pin(psutil.Process(), ALL_CORES - worker_cores(server) or ALL_CORES)
        yield Server(url, server, data_dir)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


APIS = {
    "chat": ("openai-chat", "/v1/chat/completions"),
    "completions": ("openai", "/v1/completions"),
    "responses": ("openai-responses", "/v1/responses"),
}
"""The APIs both servers speak: vLLM's benchmark backend for each, and its endpoint."""


def drive_chat(
    server: Server,
    settings: Settings,
    concurrency: int,
    num_prompts: int,
    input_len: int = 128,
    output_len: int = 128,
    seed: int = 0,
    api: str = "chat",
) -> dict:
    """One run of vLLM's own benchmark client (an API of ``APIS``, chat by default; random prompts, ignore_eos): its
    figures (``pooled``), with the samples they come from, so that several runs' figures can be pooled. The CPU time
    of the server's API process is among them (HTTP, tokenizing, detokenizing: the engine core is a child process)."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    os.environ["OPENAI_API_KEY"] = LOCAL_API_KEY  # the client sends it as the bearer key
    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args: argparse.Namespace = parser.parse_args(
        [
            "--backend",
            APIS[api][0],
            "--base-url",
            server.url,
            "--endpoint",
            APIS[api][1],
            "--model",
            str(settings.model_path.resolve()),
            "--served-model-name",
            SERVED_NAME,
            "--dataset-name",
            "random",
            "--random-input-len",
            str(input_len),
            "--random-output-len",
            str(output_len),
            "--num-prompts",
            str(num_prompts),
            "--max-concurrency",
            str(concurrency),
            "--ignore-eos",
            "--seed",
            str(seed),
            "--percentile-metrics",
            "ttft,tpot,itl,e2el",
            "--metric-percentiles",
            "50,99",
            "--disable-tqdm",
            "--save-detailed",  # keeps the per-request figures in the result (nothing is written without --save-result)
        ]
    )
    cpu_before = cpu_seconds(server.process)
    result = main(args)
    answered = [
        (t, lat, n)
        for t, lat, n, e in zip(
            result["ttfts"], result["latencies"], result["output_lens"], result["errors"], strict=True
        )
        if not e
    ]
    samples = {
        "ttfts_ms": [1000 * ttft for ttft, _, _ in answered],
        "tpots_ms": [1000 * (latency - ttft) / (n - 1) for ttft, latency, n in answered if n > 1],
        "output_tokens": result["total_output_tokens"],
        "seconds": result["duration"],
        "completed": result["completed"],
        "failed": result["failed"],
        "api_cpu_s": cpu_seconds(server.process) - cpu_before,
    }
    return {**pooled([samples]), "samples": samples}


def pooled(samples: list[dict]) -> dict:
    """The figures of several runs as if they were one: tokens over the runs' summed time, percentiles over all
    their requests (as vLLM's client computes them for one run)."""
    ttfts = [t for s in samples for t in s["ttfts_ms"]]
    tpots = [t for s in samples for t in s["tpots_ms"]]
    tokens = sum(s["output_tokens"] for s in samples)
    return {
        "output_throughput": tokens / sum(s["seconds"] for s in samples),
        "median_ttft_ms": float(np.percentile(ttfts, 50)),
        "p99_ttft_ms": float(np.percentile(ttfts, 99)),
        "median_tpot_ms": float(np.percentile(tpots, 50)),
        "completed": sum(s["completed"] for s in samples),
        "failed": sum(s["failed"] for s in samples),
        "api_cpu_ms_per_token": 1000 * sum(s["api_cpu_s"] for s in samples) / max(tokens, 1),
    }
