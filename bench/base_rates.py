"""How often the base model already satisfies each simulated preference: the starting point of a closed-loop run,
and what a new preference is sized by (a taste met one answer in five teaches differently from one met one in
twenty).

A chatloop server on the default settings answers the simulated users' prompts as they ask them (their
temperature and token limit, ``client/simulation/users.py: Behaviour``), and every shipped preference, plus any
named with ``--preference``, judges every answer.

    .venv/bin/python bench/base_rates.py --answers 320
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
from pathlib import Path

import httpx2
from harness import chatloop_command, running
from report import default_out, write_results

from client.simulation.preferences import SHIPPED, Preference, resolve, satisfies
from client.simulation.prompt_set import load_prompts
from client.simulation.users import Behaviour
from core.config import LOCAL_API_KEY, Settings
from core.logs import configure_logging

CONCURRENCY = 16


async def answers(url: str, prompts: list[str], behaviour: Behaviour) -> list[tuple[str, str]]:
    """(prompt, answer) for each prompt, asked as a simulated user asks."""
    headers = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
    slots = asyncio.Semaphore(CONCURRENCY)
    async with httpx2.AsyncClient(base_url=url, headers=headers, timeout=300) as http:

        async def ask(prompt: str) -> tuple[str, str]:
            async with slots:
                body = behaviour.chat_body([{"role": "user", "content": prompt}])
                response = await http.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            return prompt, response.json()["choices"][0]["message"]["content"]

        return await asyncio.gather(*(ask(prompt) for prompt in prompts))


def rates(answered: list[tuple[str, str]], preferences: dict[str, Preference]) -> dict[str, dict[str, float]]:
    figures = {}
    for name, preference in preferences.items():
        scores = [preference([{"role": "user", "content": prompt}], answer) for prompt, answer in answered]
        figures[name] = {
            "satisfied": sum(map(satisfies, scores)) / len(scores),
            "mean_score": statistics.fmean(scores),
            "binary": all(score in (0.0, 1.0) for score in scores),
        }
    return figures


def table(figures: dict[str, dict[str, float]], count: int) -> str:
    rows = [
        f"| {name} | {f['satisfied']:.1%} | {f['mean_score']:.3f} | {'yes' if f['binary'] else 'no'} |"
        for name, f in sorted(figures.items(), key=lambda item: -item[1]["satisfied"])
    ]
    head = [
        f"{count} answers",
        "",
        "| preference | satisfied | mean score | scores 0 or 1 only |",
        "| --- | --- | --- | --- |",
    ]
    return "\n".join(head + rows)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=320, help="answers to judge (prompts drawn with repeats)")
    parser.add_argument("--preference", action="append", default=[], help="another one, as package.module:function")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=default_out("base-rates"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    configure_logging("WARNING")
    try:
        preferences = SHIPPED | {spec: resolve(spec) for spec in args.preference}
    except ValueError as exc:
        sys.exit(str(exc))
    shipped, rng = load_prompts(), random.Random(args.seed)
    prompts = [rng.choice(shipped) for _ in range(args.answers)]
    args.out.mkdir(parents=True, exist_ok=True)
    with running("chatloop", chatloop_command, Settings(), args.out) as server:
        answered = asyncio.run(answers(server.url, prompts, Behaviour()))
    figures = rates(answered, preferences)
    write_results(args.out, args, {"preferences": figures}, table(figures, len(answered)))
    (args.out / "answers.txt").write_text("\n\n---\n\n".join(answer for _, answer in answered))


if __name__ == "__main__":
    main()
