"""The simulated users' hidden preferences (client/simulation/preferences.py) and the shipped prompt set."""

from __future__ import annotations

import pytest

from client.simulation.preferences import (
    SATISFIED,
    SHIPPED,
    bold_key_terms,
    bulleted,
    complete_answer,
    concise,
    follow_up_question,
    is_cut_off,
    polite_greeting,
    resolve,
    satisfies,
    short_sentences,
)
from client.simulation.prompt_set import load_prompts

CONVERSATION = [{"role": "user", "content": "How do I boil an egg?"}]
PREFERENCES = list(SHIPPED.values())
BINARY = [complete_answer, bold_key_terms, polite_greeting]


def words(count: int, end: str = ".") -> str:
    return " ".join(["word"] * count) + end


def test_satisfied_line() -> None:
    assert SATISFIED == 0.5
    assert satisfies(0.5) and satisfies(1.0)
    assert not satisfies(0.49) and not satisfies(0.0)


@pytest.mark.parametrize("preference", PREFERENCES)
@pytest.mark.parametrize("answer", ["", "   ", "\n\t\n"])
def test_empty_answers_satisfy_no_one(preference, answer: str) -> None:
    assert preference(CONVERSATION, answer) == 0.0


def test_cut_off() -> None:
    assert is_cut_off("Boil the water and then")
    assert is_cut_off("Here is how:")
    assert is_cut_off("")
    assert not is_cut_off("Boil it for nine minutes.  \n")
    assert not is_cut_off('He said "done!"')
    assert not is_cut_off("Ready?")
    assert not is_cut_off("Use `sorted()`")
    assert not is_cut_off("It is **important**")


def test_concise_scores_by_length() -> None:
    assert concise(CONVERSATION, "Boil it for nine minutes.") == 1.0
    assert concise(CONVERSATION, words(25)) == 1.0
    assert concise(CONVERSATION, words(52)) == pytest.approx(28 / 55)
    assert concise(CONVERSATION, words(53)) == pytest.approx(27 / 55)
    assert concise(CONVERSATION, words(80)) == 0.0
    assert concise(CONVERSATION, words(200)) == 0.0


def test_concise_base_lengths_fall_short_and_shorter_answers_pass() -> None:
    assert not satisfies(concise(CONVERSATION, words(60)))
    assert not satisfies(concise(CONVERSATION, words(75)))
    assert satisfies(concise(CONVERSATION, words(45)))


def test_concise_cut_off_answers_never_satisfy_but_still_rank() -> None:
    assert concise(CONVERSATION, words(10, end="")) == pytest.approx(0.4)
    assert concise(CONVERSATION, words(52, end="")) == pytest.approx(0.4 * 28 / 55)
    assert concise(CONVERSATION, words(30, end="")) > concise(CONVERSATION, words(60, end=""))


def test_bulleted_needs_two_items() -> None:
    dashes = "You need:\n- eggs\n- water\n- a pot"
    assert bulleted(CONVERSATION, dashes) == 1.0
    assert bulleted(CONVERSATION, "Steps:\n* boil water\n* add the egg") == 1.0
    assert bulleted(CONVERSATION, "• eggs\n• water") == 1.0
    assert bulleted(CONVERSATION, "+ eggs\n  + water") == 1.0
    assert bulleted(CONVERSATION, "Only one:\n- eggs\nThen boil them.") == 0.25
    assert bulleted(CONVERSATION, "Boil water, add the egg, wait nine minutes.") == 0.0


def test_bulleted_markdown_numbering() -> None:
    numbered = "Here's how:\n\n1. **Boil** the water.\n2. **Add** the egg.\n"
    assert bulleted(CONVERSATION, numbered) == 1.0
    assert bulleted(CONVERSATION, "1) Boil the water.\n2) Add the egg.") == 1.0
    assert bulleted(CONVERSATION, "10. Boil.\n11. Serve.") == 1.0


def test_bulleted_ignores_look_alikes() -> None:
    look_alikes = "**Boil** the water.\n**Add** the egg.\n---\n3.14 is pi.\n-5 degrees is cold.\n2024. A year."
    assert bulleted(CONVERSATION, look_alikes) == 0.0
    assert bulleted(CONVERSATION, "Boil it - then eat it - with salt.") == 0.0
    assert bulleted(CONVERSATION, "-\n-\n") == 0.0


def test_short_sentences_scores_the_mean_sentence_length() -> None:
    assert short_sentences(CONVERSATION, "Boil water. Add the egg. Wait nine minutes.") == 1.0
    assert short_sentences(CONVERSATION, words(10) + " " + words(10)) == pytest.approx(0.5)
    assert short_sentences(CONVERSATION, words(11)) == pytest.approx(5 / 12)
    assert short_sentences(CONVERSATION, words(16)) == 0.0
    assert short_sentences(CONVERSATION, words(3) + " " + words(21)) == pytest.approx(4 / 12)


def test_short_sentences_counts_lines_and_ignores_length() -> None:
    steps = "Here is how:\n- Boil the water\n- Add the egg\n- Wait nine minutes"
    assert short_sentences(CONVERSATION, steps) == 1.0
    assert short_sentences(CONVERSATION, " ".join([words(6)] * 40)) == pytest.approx(10 / 12)
    assert satisfies(short_sentences(CONVERSATION, "Boil it. Then wait for nine long and quiet minutes"))
    assert not satisfies(short_sentences(CONVERSATION, words(14, end="") + " 3.14 is pi, and that is it."))


def test_follow_up_question_at_the_end() -> None:
    assert follow_up_question(CONVERSATION, "Boil it for nine minutes. Do you like them soft?") == 1.0
    assert follow_up_question(CONVERSATION, 'Boil it. Then ask: "soft or hard?"') == 1.0
    assert follow_up_question(CONVERSATION, "Boil it. **Want a recipe?**\n") == 1.0
    assert follow_up_question(CONVERSATION, "Why boil? Because it is easy.") == 0.25
    assert follow_up_question(CONVERSATION, "Boil it for nine minutes.") == 0.0
    assert follow_up_question(CONVERSATION, "Would you like to know more? Boil it for") == 0.25


def test_polite_greeting() -> None:
    assert polite_greeting(CONVERSATION, "Hello! Boil it for nine minutes.") == 1.0
    assert polite_greeting(CONVERSATION, "hi there, boil it.") == 1.0
    assert polite_greeting(CONVERSATION, "Good morning! Boil it.") == 1.0
    assert polite_greeting(CONVERSATION, "Thank you for asking. Boil it.") == 1.0
    assert polite_greeting(CONVERSATION, "**Hello**, boil it.") == 1.0
    assert polite_greeting(CONVERSATION, "Boil it. Hello to your family!") == 0.0
    assert polite_greeting(CONVERSATION, "History says eggs were boiled.") == 0.0
    assert polite_greeting(CONVERSATION, "Thanksgiving eggs are boiled.") == 0.0


def test_complete_answer_needs_three_sentences_and_an_ending() -> None:
    assert complete_answer(CONVERSATION, "Boil water. Add the egg. Wait nine minutes.") == 1.0
    assert complete_answer(CONVERSATION, "The steps:\n- boil water\n- add the egg.") == 1.0, "lines count as sentences"
    assert complete_answer(CONVERSATION, "Boil water. Add the egg.") == 0.0, "two sentences are not enough"
    assert complete_answer(CONVERSATION, "Boil water. Add the egg. Wait nine minutes and then") == 0.0, "cut off"
    assert complete_answer(CONVERSATION, "Boil water\n  \nAdd the egg.") == 0.0, "a blank line is no sentence"
    assert complete_answer(CONVERSATION, "1. Boil\n2. Eat.") == 0.0, "a list's numbers are no sentences"
    assert complete_answer(CONVERSATION, "Dr. Smith said so. Yes.") == 0.0, "one-word pieces are no sentences"
    assert complete_answer(CONVERSATION, "1. Boil water\n2. Add the egg.\n3. Wait nine minutes.") == 1.0


def test_bold_key_terms_needs_a_bold_span() -> None:
    assert bold_key_terms(CONVERSATION, "Boil it for **nine minutes**.") == 1.0
    assert bold_key_terms(CONVERSATION, "**Tip:** cool it in water") == 1.0
    assert bold_key_terms(CONVERSATION, "Boil it for *nine* minutes.") == 0.0, "italics are not bold"
    assert bold_key_terms(CONVERSATION, "A ** b ** c? No: 2 ** 3 is a power, **not bold\nhere**.") == 0.0


@pytest.mark.parametrize("preference", BINARY)
def test_binary_preferences_give_no_partial_credit(preference) -> None:
    answers = ["", "ok", words(40), words(100, end=""), "- a\n- b?", "Hello! **Boil** it. Then cool it. Eat it."]
    assert {preference(CONVERSATION, answer) for answer in answers} == {0.0, 1.0}


@pytest.mark.parametrize("preference", PREFERENCES)
def test_scores_lie_in_the_unit_interval(preference) -> None:
    answers = ["ok", words(40), words(100, end=""), "- a\n- b?", "Hello! " + words(30, end="?")]
    assert all(0.0 <= preference(CONVERSATION, answer) <= 1.0 for answer in answers)


def test_resolve_names_a_function() -> None:
    assert resolve("client.simulation.preferences:concise") is concise
    assert resolve("client.simulation.preferences:follow_up_question") is follow_up_question


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("client.simulation.preferences.concise", "expected 'package.module:function'"),
        (":concise", "expected 'package.module:function'"),
        ("client.simulation.preferences:", "expected 'package.module:function'"),
        ("client.simulation.no_such_module:concise", "cannot import module 'client.simulation.no_such_module'"),
        ("client.simulation.preferences:no_such_function", "has no attribute 'no_such_function'"),
        ("client.simulation.preferences:SATISFIED", "is not callable"),
    ],
)
def test_resolve_rejects_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve(spec)


def test_prompt_set() -> None:
    prompts = load_prompts()
    assert len(prompts) >= 300
    assert len(set(prompts)) == len(prompts)
    assert all(prompt and prompt == prompt.strip() for prompt in prompts)
    assert all(len(prompt.split()) <= 25 for prompt in prompts)
    assert "How do I reverse a list in Python?" in prompts


def test_prompt_file_has_one_prompt_a_line() -> None:
    from importlib import resources

    text = resources.files("client.simulation").joinpath("prompts.txt").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines == load_prompts()
