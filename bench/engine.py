"""Our server under engine variants, side by side: the dtype that ``CHATLOOP_DTYPE=auto`` picks on this machine
against the other one (``server/engine.py: engine_dtype``), and vLLM's scheduler waiting for its worker by
spinning, as shipped, against our plugin's sleeping wait (``server/cpu/plugin.py``).

Each variant is our server started with a few environment settings and driven by vLLM's own benchmark client at
each concurrency, as in ``bench/serve.py``; the report adds the share of a core that vLLM's scheduler and worker
processes used while the client ran, and names the CPU's vector instructions, on which the dtype's speed depends:

    .venv/bin/python bench/engine.py                         # the variants above; concurrency 1 and 16
    .venv/bin/python bench/engine.py --variant fp32 CHATLOOP_DTYPE=float32 --variant bf16 CHATLOOP_DTYPE=bfloat16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from harness import (
    ENGINE_PROCESSES,
    Server,
    chatloop_command,
    cpu_seconds,
    drive_chat,
    running,
    vllm_plugins_but_ours,
)
from report import default_out, write_results

from core.config import Settings
from server.engine import engine_dtype


def default_variants(settings: Settings) -> dict[str, dict[str, str]]:
    picked = engine_dtype(settings.model_copy(update={"dtype": "auto"}))
    other = "bfloat16" if picked == "float32" else "float32"
    return {"default": {}, other: {"CHATLOOP_DTYPE": other}, "spinning scheduler": vllm_plugins_but_ours()}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        metavar=("NAME", "KEY=VALUE"),
        help="a variant's name and environment settings; repeat for each variant",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--num-prompts", type=int, nargs="+", default=[12, 48], help="one per concurrency")
    parser.add_argument("--warmup-prompts", type=int, default=8, help="sent at concurrency 4 before measuring")
    parser.add_argument("--out", type=Path, default=default_out("engine"))
    return parser.parse_args()


def drive_and_watch(server: Server, settings: Settings, concurrency: int, num_prompts: int) -> dict:
    """vLLM's client figures, and the share of a core each of vLLM's engine processes used meanwhile."""
    processes = {
        role: next(p for p in server.process.children(recursive=True) if p.name() == name)
        for role, name in ENGINE_PROCESSES.items()
    }
    before = {role: cpu_seconds(process) for role, process in processes.items()}
    started = time.monotonic()
    figures = drive_chat(server, settings, concurrency, num_prompts)
    wall = time.monotonic() - started
    for role, process in processes.items():
        figures[f"{role}_core_share"] = (cpu_seconds(process) - before[role]) / wall
    return figures


def report(results: dict[str, dict[int, dict]], picked: str) -> str:
    capability = torch.backends.cpu.get_cpu_capability()
    lines = [f"CPU capability {capability}: `CHATLOOP_DTYPE=auto` serves in {picked}.", ""]
    columns = [
        "variant",
        "concurrency",
        "output tok/s",
        "TPOT median ms",
        "TTFT median ms",
        "scheduler core share",
        "worker core share",
        "tok/s against the first",
    ]
    lines += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    first = next(iter(results.values()))
    for name, by_concurrency in results.items():
        for c, r in by_concurrency.items():
            lines.append(
                f"| {name} | {c} | {r['output_throughput']:.1f} | {r['median_tpot_ms']:.1f} | "
                f"{r['median_ttft_ms']:.0f} | {r['scheduler_core_share']:.2f} | {r['worker_core_share']:.2f} | "
                f"{r['output_throughput'] / first[c]['output_throughput']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    settings = Settings()
    args.out.mkdir(parents=True, exist_ok=True)
    variants = (
        {name: dict(pair.split("=", 1) for pair in pairs) for name, *pairs in args.variant}
        if args.variant
        else default_variants(settings)
    )
    levels = dict(zip(args.concurrency, args.num_prompts, strict=True))
    results: dict[str, dict[int, dict]] = {}
    for name, env in variants.items():
        with running(name.replace(" ", "-"), chatloop_command, settings, args.out, env) as server:
            drive_chat(server, settings, concurrency=4, num_prompts=args.warmup_prompts)
            results[name] = {c: drive_and_watch(server, settings, c, n) for c, n in levels.items()}
    picked = engine_dtype(settings.model_copy(update={"dtype": "auto"}))
    write_results(args.out, args, {"variants": variants, "results": results}, report(results, picked))


if __name__ == "__main__":
    main()
