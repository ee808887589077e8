"""Simulated users: they chat with the running server and give feedback as a person in the web UI would, judging
each answer with a hidden preference, through the public API only (``/v1/chat/completions``, ``/v1/feedback``).

A user asks a prompt from the shipped set. A satisfying answer gets a thumbs up. Any other gets a thumbs down and
a regeneration; the user then picks the better of the two (a comparison, when their scores differ) and rates the
new answer as well. Noise: a share of turns gets a random rating instead, and a share gets no feedback at all. A
share of turns gets an honest thumb and nothing more, as most people rate when they rate at all (``MODES``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx2

from client.simulation.preferences import Preference, satisfies

log = logging.getLogger(__name__)

Reaction = Literal["silent", "random", "thumb", "full"]
"""No feedback; a random thumb; an honest thumb; an honest thumb and, if unsatisfied, a regeneration and a choice."""


@dataclass(frozen=True)
class Shares:
    """How a user reacts to an answer, as shares of turns; the rest get the full treatment (``Reaction``)."""

    silent: float
    """Turns that get no feedback at all."""
    random: float
    """Turns whose rating is a coin toss, as from a careless user."""
    thumb_only: float
    """Turns whose answer gets an honest thumb and no regeneration, however it scored."""

    def __post_init__(self) -> None:
        shares = (self.silent, self.random, self.thumb_only)
        if not all(0 <= share <= 1 for share in shares) or math.fsum(shares) > 1 + 1e-9:
            raise ValueError(f"the shares of turns must lie in [0, 1] and add up to 1 at most: {self}")

    def reaction(self, roll: float) -> Reaction:
        """What a turn gets, from a uniform draw in [0, 1)."""
        shares: list[tuple[Reaction, float]] = [
            ("silent", self.silent),
            ("random", self.random),
            ("thumb", self.thumb_only),
        ]
        for reaction, share in shares:
            if roll < share:
                return reaction
            roll -= share
        return "full"


MODES = {
    "attentive": Shares(silent=0.1, random=0.1, thumb_only=0.0),
    "casual": Shares(silent=0.6, random=0.0, thumb_only=0.3),
}
"""How the users give feedback. ``attentive``: 80% of answers get an honest thumb and, when unsatisfying, a
regeneration and a choice (a pair, when the two scores differ), 10% a random thumb, 10% nothing. ``casual`` is
closer to people in a chat UI: 60% nothing, 30% an honest thumb alone, 10% as attentive users' 80%. A pair needs an
unsatisfying answer whose regeneration scores differently: with a graded preference most regenerations do, with a
binary one only those that satisfy, so a taste the base model rarely meets makes few pairs in either mode."""


@dataclass
class Behaviour:
    users: int = 6
    shares: Shares = MODES["attentive"]
    think_seconds: float = 5.0
    """Mean pause between a user's turns (reading, typing): people do not chat back to back."""
    max_tokens: int = 96
    temperature: float = 0.7
    seed: int = 0

    def chat_body(self, conversation: list[dict[str, str]]) -> dict:
        """A chat request as these users send it."""
        return {
            "model": "chatloop",
            "messages": conversation,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }


@dataclass
class Answer:
    completion_id: str
    text: str
    version: str


@dataclass
class Turn:
    """One answer a user read: when, from which version, and whether it satisfied the hidden preference."""

    at: float
    user: str
    version: str
    score: float
    satisfied: bool
    regeneration: bool


class SimulatedUser:
    def __init__(
        self, name: str, http: httpx2.AsyncClient, preference: Preference, prompts: list[str], behaviour: Behaviour
    ):
        self.name = name
        self.http = http
        self.preference = preference
        self.prompts = prompts
        self.behaviour = behaviour
        self.rng = random.Random(f"{behaviour.seed}:{name}")

    async def chat(self, conversation: list[dict[str, str]], regenerate_of: str | None = None) -> Answer:
        body = {**self.behaviour.chat_body(conversation), "user": self.name}
        if regenerate_of is not None:
            body["metadata"] = {"regenerate_of": regenerate_of}
        response = await self.http.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        payload = response.json()
        return Answer(payload["id"], payload["choices"][0]["message"]["content"], payload["system_fingerprint"])

    async def feedback(self, body: dict) -> None:
        response = await self.http.post("/v1/feedback", json={**body, "user": self.name})
        if response.status_code >= 400:  # a rate limit or a quota: a real user would shrug and go on
            log.info("feedback refused", extra={"user": self.name, "status": response.status_code})

    async def rate(self, answer: Answer, up: bool) -> None:
        await self.feedback({"completion_id": answer.completion_id, "rating": "up" if up else "down"})

    def judge(self, conversation: list[dict[str, str]], answer: Answer, regeneration: bool) -> Turn:
        score = self.preference(conversation, answer.text)
        return Turn(time.time(), self.name, answer.version, score, satisfies(score), regeneration)

    async def turn(self) -> list[Turn]:
        conversation = [{"role": "user", "content": self.rng.choice(self.prompts)}]
        first = await self.chat(conversation)
        judged = [self.judge(conversation, first, regeneration=False)]
        reaction = self.behaviour.shares.reaction(self.rng.random())
        if reaction == "silent":
            return judged
        if reaction == "random":
            await self.rate(first, up=self.rng.random() < 0.5)
            return judged
        if reaction == "thumb":
            await self.rate(first, up=judged[0].satisfied)
            return judged
        if judged[0].satisfied:
            await self.rate(first, up=True)
            return judged
        await self.rate(first, up=False)
        second = await self.chat(conversation, regenerate_of=first.completion_id)
        judged.append(self.judge(conversation, second, regeneration=True))
        if judged[1].score != judged[0].score:
            better, worse = (second, first) if judged[1].score > judged[0].score else (first, second)
            await self.feedback(
                {"chosen": {"completion_id": better.completion_id}, "rejected": {"completion_id": worse.completion_id}}
            )
        await self.rate(second, up=judged[1].satisfied)
        return judged


async def simulate(
    url: str,
    key: str,
    preference: Preference,
    prompts: list[str],
    behaviour: Behaviour,
    seconds: float,
    on_turns: Callable[[list[Turn]], None],
) -> None:
    """Every user takes turns until ``seconds`` have passed; ``on_turns`` sees each turn's answers as they come.
    A failed request is logged and the user goes on: the experiment measures learning, not uptime."""
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}"}
    # httpx2 (pydantic's maintained fork, which the OpenAI SDK uses) rather than httpx: httpx's pool can close an
    # idle connection it has already handed to a request whose task has not run yet, once its keep-alive (5 s)
    # runs out meanwhile. A client starved of CPU for a few seconds (a round loading its models on the same cores)
    # then fails with ReadError, the server having done nothing (docs/benchmarks.md, "Soak runs 5 to 7").
    async with httpx2.AsyncClient(base_url=url, headers=headers, timeout=300) as http:

        async def live(name: str) -> None:
            user = SimulatedUser(name, http, preference, prompts, behaviour)
            while time.monotonic() < deadline:
                await asyncio.sleep(user.rng.uniform(0, 2 * behaviour.think_seconds))
                try:
                    on_turns(await user.turn())
                except httpx2.HTTPError as exc:
                    log.warning("simulated turn failed", extra={"user": name, "error": repr(exc)})
                    await asyncio.sleep(1)

        await asyncio.gather(*(live(f"sim-{behaviour.seed}-{i}") for i in range(behaviour.users)))
