"""The prompt set the simulated users draw from, shipped as package data (``prompts.txt``, one prompt a line) so
that an installed ``chatloop`` simulates the same users as a checkout."""

from __future__ import annotations

from importlib import resources

PROMPTS_FILE = "prompts.txt"


def load_prompts() -> list[str]:
    """The prompts in file order, stripped; blank lines are skipped so a trailing newline is harmless."""
    text = resources.files(__package__).joinpath(PROMPTS_FILE).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]
