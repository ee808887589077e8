"""The pair rules of feedback/rules.py, on conversation states built by hand."""

from __future__ import annotations

from feedback.rules import ConversationState, PairDraft, pairs_after_comparison, pairs_after_rating

A, B, C = "c1:0", "c1:1", "c2:0"


def test_single_rating_makes_no_pair() -> None:
    assert pairs_after_rating(ConversationState(), A, "up") == []
    assert pairs_after_rating(ConversationState(), A, "down") == []


def test_up_against_down() -> None:
    state = ConversationState(ratings={B: "down"})
    assert pairs_after_rating(state, A, "up") == [PairDraft(A, B, "up_vs_down")]
    state = ConversationState(ratings={B: "up"})
    assert pairs_after_rating(state, A, "down") == [PairDraft(B, A, "up_vs_down")]


def test_ties_make_no_pair() -> None:
    assert pairs_after_rating(ConversationState(ratings={B: "up"}), A, "up") == []
    assert pairs_after_rating(ConversationState(ratings={B: "down"}), A, "down") == []


def test_repeating_or_clearing_a_rating_adds_nothing() -> None:
    state = ConversationState(ratings={A: "up", B: "down"})
    assert pairs_after_rating(state, A, "up") == []
    assert pairs_after_rating(state, A, None) == []


def test_a_pair_is_never_emitted_twice_but_its_reverse_may_be() -> None:
    state = ConversationState(ratings={B: "down"}, emitted={f"{A}>{B}"})
    assert pairs_after_rating(state, A, "up") == []
    state = ConversationState(ratings={A: "up", B: "down"}, emitted={f"{A}>{B}"})
    assert pairs_after_rating(state, B, "up") == []  # B up, A up: a tie now
    assert pairs_after_comparison(state, B, A) == [PairDraft(B, A, "comparison")]
    assert pairs_after_comparison(state, A, B) == []


def test_regeneration_rated_up_beats_the_answer_it_replaced() -> None:
    state = ConversationState(replaces={C: A})
    assert pairs_after_rating(state, C, "up") == [PairDraft(C, A, "regenerate_up")]
    assert pairs_after_rating(ConversationState(replaces={C: A}, ratings={A: "up"}), C, "up") == []


def test_replaced_answer_rated_down_loses_to_its_regeneration() -> None:
    state = ConversationState(replaces={C: A})
    assert pairs_after_rating(state, A, "down") == [PairDraft(C, A, "regenerate_down")]
    assert pairs_after_rating(ConversationState(replaces={C: A}, ratings={C: "down"}), A, "down") == []


def test_first_rule_names_a_pair_found_by_two() -> None:
    state = ConversationState(replaces={C: A}, ratings={A: "down"})
    assert pairs_after_rating(state, C, "up") == [PairDraft(C, A, "up_vs_down")]


def test_rules_have_weights() -> None:
    assert PairDraft(A, B, "comparison").weight == 1.0
    assert PairDraft(A, B, "regenerate_down").weight < PairDraft(A, B, "regenerate_up").weight < 1.0
