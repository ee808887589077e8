"""How a round samples answers (PPO's rollouts, best-of-n, the gate): as users are served.

A policy is judged and improved on the distribution its users see. Sampled at temperature 1.0 and 64 tokens while
users ask for 0.7 and 96, PPO would shape answers nobody reads, and the gate would compare those. So unless the
settings fix them, a round takes the median temperature and token limit of the recent answers it draws its prompts
from (a request without a temperature was served at the server's 1.0), the token limit capped by
``PPOSettings.token_cap`` (an answer without ``max_tokens`` may run to the context's end; with no recent answers,
the cap itself), a temperature taken from the answers kept within [``MIN_TEMPERATURE``, ``MAX_TEMPERATURE``]:
PPO learns from differences between samples, and greedy decoding has none; and a busy principal asking at
temperature 2.0 could otherwise move the median where every rollout is noise that the round would learn from.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from core.config import PPOSettings

SERVER_TEMPERATURE = 1.0
"""What the server samples at when a request names no temperature (``server/chat_api/serving.py``)."""
MIN_TEMPERATURE = 0.1
MAX_TEMPERATURE = 1.0


@dataclass(frozen=True)
class Served:
    """The sampling of one recent answer, as its record kept it."""

    temperature: float | None
    max_tokens: int


@dataclass(frozen=True)
class Sampling:
    temperature: float
    max_new_tokens: int

    @classmethod
    def of(cls, settings: PPOSettings, served: Sequence[Served] = ()) -> Sampling:
        temperature = settings.temperature
        if temperature is None:
            temperatures = [SERVER_TEMPERATURE if s.temperature is None else s.temperature for s in served]
            temperature = statistics.median(temperatures) if temperatures else SERVER_TEMPERATURE
            temperature = min(max(temperature, MIN_TEMPERATURE), MAX_TEMPERATURE)
        tokens = settings.max_new_tokens
        if tokens is None:
            tokens = settings.token_cap
            if served:
                tokens = min(int(statistics.median(s.max_tokens for s in served)), tokens)
        return cls(temperature=temperature, max_new_tokens=max(tokens, 1))
