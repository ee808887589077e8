"""How gestures become preference pairs: the rules, as pure functions over one conversation's feedback state.

A conversation is what one user (API key and ``user``) asked: the messages before an answer. Each choice of each
completion to it is an answer, named by an ``AnswerRef`` ``"<completion id>:<choice index>"``. The rules:

1. ``comparison``: the user picked one answer over another. chosen > rejected, weight 1.0.
2. ``up_vs_down``: one answer is rated up and another down in the same conversation. up > down, weight 1.0.
3. ``regenerate_up``: a regeneration is rated up while the answer it replaced is not. new > old, weight 0.75.
4. ``regenerate_down``: a replaced answer is rated down while its regeneration is not. new > old, weight 0.5
   (the weakest: the user has said only that the old answer was bad).

Ties (both up, both down) and single ratings make no pair. A pair, as an ordered (chosen, rejected), is emitted
at most once, whichever rule sees it first; the opposite pair may still come later, when the user changes their
mind, and both stay in the data. Clearing a rating takes no pair back: it may already have been trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Rating = Literal["up", "down"]

WEIGHTS = {"comparison": 1.0, "up_vs_down": 1.0, "regenerate_up": 0.75, "regenerate_down": 0.5}


def answer_ref(completion_id: str, choice_index: int) -> str:
    return f"{completion_id}:{choice_index}"


def split_ref(ref: str) -> tuple[str, int]:
    completion_id, _, index = ref.rpartition(":")
    return completion_id, int(index)


@dataclass(frozen=True)
class PairDraft:
    chosen: str
    rejected: str
    rule: str

    @property
    def key(self) -> str:
        return f"{self.chosen}>{self.rejected}"

    @property
    def weight(self) -> float:
        return WEIGHTS[self.rule]


@dataclass
class ConversationState:
    ratings: dict[str, Rating] = field(default_factory=dict)
    replaces: dict[str, str] = field(default_factory=dict)
    """regeneration answer -> the answer it replaced"""
    emitted: set[str] = field(default_factory=set)
    """keys of the pairs already emitted"""


def _new(state: ConversationState, drafts: list[PairDraft]) -> list[PairDraft]:
    """Drop pairs already emitted, and duplicates within ``drafts`` (the first rule to find a pair names it)."""
    seen = set(state.emitted)
    fresh = []
    for draft in drafts:
        if draft.key not in seen:
            seen.add(draft.key)
            fresh.append(draft)
    return fresh


def pairs_after_rating(state: ConversationState, ref: str, rating: Rating | None) -> list[PairDraft]:
    """The pairs that rating ``ref`` (``None`` clears its rating) adds, given the state before it."""
    if rating is None or state.ratings.get(ref) == rating:
        return []
    others = {other: r for other, r in state.ratings.items() if other != ref}
    drafts: list[PairDraft] = []
    if rating == "up":
        drafts += [PairDraft(ref, other, "up_vs_down") for other, r in others.items() if r == "down"]
        replaced = state.replaces.get(ref)
        if replaced is not None and others.get(replaced) != "up":
            drafts.append(PairDraft(ref, replaced, "regenerate_up"))
    else:
        drafts += [PairDraft(other, ref, "up_vs_down") for other, r in others.items() if r == "up"]
        drafts += [
            PairDraft(new, ref, "regenerate_down")
            for new, old in state.replaces.items()
            if old == ref and others.get(new) != "down"
        ]
    return _new(state, drafts)


def pairs_after_comparison(state: ConversationState, chosen: str, rejected: str) -> list[PairDraft]:
    return _new(state, [PairDraft(chosen, rejected, "comparison")])
