"""Our HTTP layer against vLLM's own OpenAI server, on the same model and the same engine settings.

Each server is started on a free port and driven by vLLM's own benchmark client (``vllm.benchmarks.serve``, the
chat API by default, or ``--api completions`` / ``responses``; random prompts of --input-len tokens, --output-len
answer tokens with ignore_eos) at each concurrency. vLLM's server runs as shipped (``vllm``) and, on request
(``--order``), with our engine's settings as well (``vllm-our-engine``: the LoRA mode that serves canaries as
adapters, with its worker extension, and our vLLM plugin, ``server/cpu/plugin.py``), so that only the HTTP layers
differ. ``chatloop-unlimited`` is our server with the per-principal chat limits off
(``CHATLOOP_LIMITS__ENABLED=false``): beside ``chatloop`` it prices the limits' round trip to Redis on every request.
The script prints a table of all and the ratios ours / each other server's, and writes every figure as JSON into the
output folder.

The machines this runs on drift: one stream's step time moved from 35 to 58 ms within a few minutes here, with
nothing else running, and a server run ten minutes after another was 36% faster than the same server before. So all
servers are started at once and take turns: each concurrency level is cut into ``--blocks``, each block of prompts
(at least four per stream) goes to every server in turn (the order reversed from block to block, a pause before
each so that the previous server's engine is idle), and each server's figures pool its blocks. An idle server costs
nothing measurable (its engine processes sleep). Run it with nothing else loading the machine:

    .venv/bin/python bench/serve.py                       # concurrency 1, 4, 16; 4 blocks of 16, 16, 64 prompts
    .venv/bin/python bench/serve.py --concurrency 16 --num-prompts 32 --blocks 2   # a quicker look
    .venv/bin/python bench/serve.py --order vllm vllm-our-engine chatloop          # the HTTP layers alone too
    .venv/bin/python bench/serve.py --concurrency 16 --order chatloop-unlimited chatloop   # what the limits cost
    .venv/bin/python bench/serve.py --api completions     # /v1/completions (or responses) instead of chat
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from harness import APIS, SERVED_NAME, Server, chatloop_command, drive_chat, pooled, running, vllm_plugins_but_ours
from report import default_out, write_results

from core.config import LOCAL_API_KEY, Settings
from server.engine import engine_dtype, max_lora_rank

REFERENCES = ("vllm", "vllm-our-engine", "chatloop-unlimited")
NO_PINGS = {"CHATLOOP_STREAM_PING_S": "0"}
"""Our streams' keep-alive comments off, as vLLM's server sends none: vLLM's benchmark client drops the event that
follows a comment sent on its own, so an answer that lasted past the first ping lost its usage and was counted
short (up to a fifth of its tokens, 2026-12-07)."""


def engine_flags(settings: Settings) -> list[str]:
    """vLLM server flags for the engine settings our server uses, so that only the HTTP layer differs."""
    flags = [
        "--model",
        str(settings.model_path.resolve()),
        "--served-model-name",
        SERVED_NAME,
        "--dtype",
        engine_dtype(settings),
        "--max-model-len",
        str(settings.max_model_len),
        "--max-num-seqs",
        str(settings.max_num_seqs),
        "--seed",
        "0",
        "--structured-outputs-config",
        json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
    ]
    return flags + (["--enforce-eager"] if settings.enforce_eager else [])


def lora_flags(settings: Settings) -> list[str]:
    """Our engine's LoRA mode (``server/engine.py: engine_args``), worker extension included."""
    return [
        "--enable-lora",
        "--max-lora-rank",
        str(max_lora_rank(settings)),
        "--max-loras",
        str(settings.rollout.max_adapters),
        "--worker-extension-cls",
        "server.worker_extension.ChatloopWorker",
    ]


def vllm_command(settings: Settings, lora: bool, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *engine_flags(settings),
        *(lora_flags(settings) if lora else []),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-key",
        LOCAL_API_KEY,
    ]


def ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs else float("nan")


WAVES_PER_BLOCK = 4
"""A block holds at least this many prompts per stream: its first wave's prefill burst is then a quarter of it."""
SETTLE_S = 3.0
"""Before each block: vLLM's worker spins for a second after its last step, on the cores the next server needs."""


def measure(servers: dict[str, Server], settings: Settings, args: argparse.Namespace, concurrency: int) -> dict:
    """Every server's pooled figures at one concurrency; its blocks' own figures under ``blocks``."""
    per_block = max(args.num_prompts // args.blocks, WAVES_PER_BLOCK * concurrency)
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    for block in range(args.blocks):
        names = list(servers) if block % 2 == 0 else list(reversed(servers))
        for name in names:
            time.sleep(SETTLE_S)
            seed = 1 + 100 * concurrency + block  # the same prompts for every server, new ones for each block
            runs[name].append(
                drive_chat(
                    servers[name], settings, concurrency, per_block, args.input_len, args.output_len, seed, args.api
                )
            )
    return {name: {**pooled([r["samples"] for r in blocks]), "blocks": blocks} for name, blocks in runs.items()}


def block_ratios(ours: dict, theirs: dict) -> str:
    pairs = zip(ours.get("blocks", []), theirs.get("blocks", []), strict=True)
    return ", ".join(f"{ratio(a['output_throughput'], b['output_throughput']):.2f}" for a, b in pairs)


def report(results: dict[str, dict[int, dict]], concurrencies: list[int]) -> str:
    """Every server's figures, then ours against each other server that ran."""
    columns = [
        "concurrency",
        "server",
        "output tok/s",
        "TTFT median ms",
        "TTFT p99 ms",
        "TPOT median ms",
        "API CPU ms/token",
        "failed",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for c in concurrencies:
        for name, by_concurrency in results.items():
            r = by_concurrency[c]
            lines.append(
                f"| {c} | {name} | {r['output_throughput']:.1f} | {r['median_ttft_ms']:.0f} | "
                f"{r['p99_ttft_ms']:.0f} | {r['median_tpot_ms']:.1f} | {r['api_cpu_ms_per_token']:.2f} | "
                f"{r['failed']} |"
            )
    lines += [
        "",
        "| against | concurrency | throughput ratio (chatloop/against) | TTFT median ratio | TTFT p99 ratio | "
        "throughput ratio of each block |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for reference, c in ((name, c) for name in REFERENCES if name in results for c in concurrencies):
        ours, theirs = results["chatloop"][c], results[reference][c]
        lines.append(
            f"| {reference} | {c} | {ratio(ours['output_throughput'], theirs['output_throughput']):.3f} | "
            f"{ratio(ours['median_ttft_ms'], theirs['median_ttft_ms']):.3f} | "
            f"{ratio(ours['p99_ttft_ms'], theirs['p99_ttft_ms']):.3f} | {block_ratios(ours, theirs)} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument(
        "--order",
        nargs="+",
        choices=[*REFERENCES, "chatloop"],
        default=["vllm", "chatloop"],
        help="the servers to run, in this order (chatloop and at least one other; vllm-our-engine isolates the "
        "HTTP layers, chatloop-unlimited the chat limits)",
    )
    parser.add_argument("--api", choices=sorted(APIS), default="chat", help="the API both servers are driven through")
    parser.add_argument("--blocks", type=int, default=4, help="turns of the servers at each concurrency")
    parser.add_argument("--warmup-prompts", type=int, default=8, help="sent at concurrency 4 before measuring")
    parser.add_argument("--out", type=Path, default=default_out("serve"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    settings = Settings()
    args.out.mkdir(parents=True, exist_ok=True)
    servers = {
        "vllm": (partial(vllm_command, settings, False), vllm_plugins_but_ours()),
        "vllm-our-engine": (partial(vllm_command, settings, True), {}),
        "chatloop": (chatloop_command, NO_PINGS),
        "chatloop-unlimited": (chatloop_command, {**NO_PINGS, "CHATLOOP_LIMITS__ENABLED": "false"}),
    }
    with ExitStack() as stack:
        up = {
            name: stack.enter_context(running(name, servers[name][0], settings, args.out, servers[name][1]))
            for name in args.order
        }
        for server in up.values():
            drive_chat(server, settings, 4, args.warmup_prompts, args.input_len, args.output_len, api=args.api)
        results = {name: {} for name in up}
        for c in args.concurrency:
            for name, figures in measure(up, settings, args, c).items():
                results[name][c] = figures
    write_results(args.out, args, {"results": results}, report(results, args.concurrency))


if __name__ == "__main__":
    main()
