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
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx2

from client.simulation.preferences import satisfies

log = logging.getLogger(__name__)

Preference = Callable[[list[dict[str, str]], str], float]
Reaction = Literal["silent", "random", "thumb", "full"]
"""No feedback; a random thumb; an honest thumb; an honest thumb and, if unsatisfied, a regeneration and a choice."""


@dataclass
class Behaviour:
    users: int = 6
    random_share: float = 0.1
    """Turns whose rating is a coin toss, as from a careless user."""
    silent_share: float = 0.1
    """Turns that get no feedback at all."""
    thumb_only_share: float = 0.0
    """Turns whose answer gets an honest thumb and no regeneration, however it scored."""
    think_seconds: float = 5.0
    """Mean pause between a user's turns (reading, typing): people do not chat back to back."""
    max_tokens: int = 96
    temperature: float = 0.7
    seed: int = 0

    def reaction(self, roll: float) -> Reaction:
        """What a turn gets, from a uniform draw in [0, 1)."""
        shares: list[tuple[Reaction, float]] = [
            ("silent", self.silent_share),
            ("random", self.random_share),
            ("thumb", self.thumb_only_share),
        ]
        for reaction, share in shares:
            if roll < share:
                return reaction
            roll -= share
        return "full"

    def __post_init__(self) -> None:
        shares = (self.random_share, self.silent_share, self.thumb_only_share)
        if min(shares) < 0 or sum(shares) > 1:
            raise ValueError(
                f"the random, silent and thumb-only shares must be at least 0 and add up to 1 at most: {shares}"
            )


MODES = {
    "attentive": {"silent_share": 0.1, "random_share": 0.1, "thumb_only_share": 0.0},
    "casual": {"silent_share": 0.6, "random_share": 0.0, "thumb_only_share": 0.3},
}
"""How the users give feedback. ``attentive``: nearly every answer is rated, and every unsatisfying one
regenerated and compared, which makes a pair of almost every turn. ``casual`` is closer to people in a chat UI:
60% of answers get no feedback, 30% a single thumb, 10% a regeneration and a choice."""


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
        body = {
            "model": "chatloop",
            "messages": conversation,
            "user": self.name,
            "max_tokens": self.behaviour.max_tokens,
            "temperature": self.behaviour.temperature,
        }
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
        reaction = self.behaviour.reaction(self.rng.random())
        if reaction == "silent":
            return judged
        if reaction in ("random", "thumb"):
            await self.rate(first, up=self.rng.random() < 0.5 if reaction == "random" else judged[0].satisfied)
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
    # then fails with ReadError, the server having done nothing (docs/benchmarks.md, "Soak", runs 4 and 5).
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
