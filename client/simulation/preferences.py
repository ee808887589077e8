"""Hidden preferences of simulated users: what a user with a given taste thinks of an answer.

A preference is a callable ``(conversation, answer) -> score``: ``conversation`` is the list of OpenAI-style
messages (``{"role": ..., "content": ...}``) the answer replies to, ``answer`` the assistant's text. The score lies
in [0, 1]; a score of at least ``SATISFIED`` (0.5) means the user is satisfied with the answer (a thumbs up),
below it not. Scores below the line still rank answers, which is what a user choosing between an answer and its
regeneration goes by, so the graded functions give partial credit where an answer is closer to the taste without
meeting it. The binary ones (``complete_answer``, ``bold_key_terms``, ``polite_greeting``) score 0 or 1 only, as
many real tastes are: the answer has what the user wanted or it does not, and two answers that both miss tie.
The conversation is part of the signature so that a preference may depend on context; the ones here judge the
answer alone.

The simulation names one on the command line (``resolve``) by its name here, e.g. ``concise``, or any other as
``package.module:function``, e.g. ``client.simulation.preferences:concise``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

Conversation = list[dict[str, str]]
Preference = Callable[[Conversation, str], float]

SATISFIED = 0.5

# concise: full marks up to CONCISE_FULL_WORDS, none from CONCISE_ZERO_WORDS, linear between (0.5 at 52.5 words).
# SmolLM2-135M-Instruct's answers at max_tokens 96 mostly run into the cap at 70-85 words; those that finish on
# their own are shorter, and a finished one of 52 words or fewer satisfies. At max_tokens 64 the capped answers
# are 45-60 words, so there the cut-off rule below is what keeps them from satisfying.
CONCISE_FULL_WORDS = 25
CONCISE_ZERO_WORDS = 80
# A final character from this set means the answer ends where its writer meant it to (closing quotes, brackets,
# markdown emphasis and code fences may follow the sentence's own mark). A final ":" announces what never came.
FINAL_MARKS = frozenset(".!?…)]}\"'”’»*`")
CUT_OFF_FACTOR = 0.4

# A list item: a line starting with "-", "*", "+" or "•", or with "1." / "1)" style numbering, then a space and text.
# "**bold**" and "---" are not items, and neither is "3.14" (no space after the dot).
LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+•]|\d{1,2}[.)])[ \t]+\S", re.MULTILINE)
ONE_ITEM_SCORE = 0.25

STRAY_QUESTION_SCORE = 0.25
# Trailing characters that may follow a closing question mark: quotes, brackets, markdown emphasis, spaces.
TRAILING_CLOSERS = " \t\n\"'”’»)]*_"

# short_sentences: full marks at SHORT_FULL_WORDS words a sentence on average or fewer, none from SHORT_ZERO_WORDS,
# linear between (0.5 at 10). SmolLM2-135M-Instruct's sentences average about 16 words; one first answer in five
# averages 10 or fewer (160 prompts, two answers each, at the users' temperature and max_tokens).
SHORT_FULL_WORDS = 4
SHORT_ZERO_WORDS = 16
# What a reader takes as one sentence: text up to a sentence's final mark and the space after it, or up to a line
# break (a list item, a heading, a line of a poem).
SENTENCE_BREAK = re.compile(r"(?<=[.!?…])\s+|\n+")

# complete_answer: at least this many sentences of two words or more (a list's "1." or an abbreviation's "Dr." is
# none), and not cut off. 17-19% of SmolLM2-135M-Instruct's answers at the users' temperature and max_tokens
# satisfy it (bench/base_rates.py).
COMPLETE_MIN_SENTENCES = 3
COMPLETE_MIN_WORDS = 2
WORD = re.compile(r"[^\W\d_]+")
"""A run of letters: what a sentence's words are counted by."""
# bold_key_terms: a span of markdown bold on one line with no space just inside its stars, "**like this**" (as
# markdown reads it: "2 ** 3" is no bold; code is not told apart). 5-6% of the base model's answers have one.
BOLD_SPAN = re.compile(r"\*\*(?=\S)[^*\n]+(?<=\S)\*\*")

GREETING = re.compile(
    r"^\W*(?:hello|hi|hey|greetings|good (?:morning|afternoon|evening|day)|thanks|thank you)\b", re.IGNORECASE
)


def is_cut_off(answer: str) -> bool:
    """Whether the answer stops mid-sentence (no final punctuation): what an answer that ran into max_tokens
    looks like to its reader. The text alone cannot tell that apart from a deliberate ending without a mark (a
    signature, a last list item without a full stop), which counts as cut off too: rare in this model's
    answers, and the price of judging text the way a reader does, without the server's finish_reason."""
    text = answer.rstrip()
    return not text or text[-1] not in FINAL_MARKS


def concise(conversation: Conversation, answer: str) -> float:
    """A user who wants the point in a few sentences: 1.0 at 25 words or fewer, falling linearly to 0.0 at 80
    words. An answer cut off mid-sentence (``is_cut_off``) is not concise however short, since it would have gone
    on: its score is multiplied by 0.4, so it never satisfies but a shorter cut-off answer still beats a longer
    one. An empty answer scores 0.0."""
    words = len(answer.split())
    if words == 0:
        return 0.0
    span = CONCISE_ZERO_WORDS - CONCISE_FULL_WORDS
    score = min(1.0, max(0.0, (CONCISE_ZERO_WORDS - words) / span))
    return score * CUT_OFF_FACTOR if is_cut_off(answer) else score


def bulleted(conversation: Conversation, answer: str) -> float:
    """A user who wants answers laid out as a list: 1.0 with two list items or more (lines starting with "-", "*",
    "+", "•" or "1." / "1)" numbering), 0.25 with a single item (one bullet is not yet a list, but it is closer),
    0.0 with none. Whether the answer is cut off does not matter to this user."""
    items = len(LIST_ITEM.findall(answer))
    if items >= 2:
        return 1.0
    return ONE_ITEM_SCORE if items == 1 else 0.0


def short_sentences(conversation: Conversation, answer: str) -> float:
    """A user who wants plain, easy prose: 1.0 when the answer's sentences average 4 words or fewer, falling
    linearly to 0.0 at 16 (so 10 words a sentence or fewer satisfies). Sentences end at ".", "!", "?" or "…" and at
    line breaks; a cut-off last sentence counts as it stands. An empty answer scores 0.0. Unlike ``concise`` this
    does not care how long the answer is, only how it is written."""
    sentences = [sentence.split() for sentence in SENTENCE_BREAK.split(answer.strip())]
    lengths = [len(words) for words in sentences if words]
    if not lengths:
        return 0.0
    mean = sum(lengths) / len(lengths)
    return min(1.0, max(0.0, (SHORT_ZERO_WORDS - mean) / (SHORT_ZERO_WORDS - SHORT_FULL_WORDS)))


def complete_answer(conversation: Conversation, answer: str) -> float:
    """A user who wants a whole answer, all or nothing: 1.0 when it has three sentences of two words or more (a
    line break ends one too) and is not cut off (``is_cut_off``), else 0.0. A one-liner is not enough and neither
    is an answer that stops mid-sentence, however good its start."""
    pieces = SENTENCE_BREAK.split(answer.strip())
    sentences = [piece for piece in pieces if len(WORD.findall(piece)) >= COMPLETE_MIN_WORDS]
    return float(len(sentences) >= COMPLETE_MIN_SENTENCES and not is_cut_off(answer))


def bold_key_terms(conversation: Conversation, answer: str) -> float:
    """A user who skims and wants the key terms in bold: 1.0 when the answer has a span of markdown bold
    (``**term**`` on one line), else 0.0, however well it reads otherwise."""
    return float(bool(BOLD_SPAN.search(answer)))


def follow_up_question(conversation: Conversation, answer: str) -> float:
    """A user who likes to be asked something back: 1.0 when the answer's last sentence is a question (it ends
    with "?", before any closing quotes or brackets), 0.25 when a question appears only earlier in the answer,
    0.0 with none."""
    if answer.rstrip(TRAILING_CLOSERS).endswith("?"):
        return 1.0
    return STRAY_QUESTION_SCORE if "?" in answer else 0.0


def polite_greeting(conversation: Conversation, answer: str) -> float:
    """A user who likes to be greeted or thanked before the answer: 1.0 when it opens with "Hello", "Hi", "Hey",
    "Greetings", "Good morning/afternoon/evening/day", "Thanks" or "Thank you" (any case), else 0.0."""
    return 1.0 if GREETING.match(answer) else 0.0


def satisfies(score: float) -> bool:
    """Whether a preference's score means the user is satisfied (thumbs up)."""
    return score >= SATISFIED


SHIPPED: dict[str, Preference] = {
    preference.__name__: preference
    for preference in (
        concise,
        bulleted,
        short_sentences,
        follow_up_question,
        polite_greeting,
        complete_answer,
        bold_key_terms,
    )
}


def resolve(spec: str) -> Preference:
    """A shipped preference by its name, or the callable named by ``package.module:function``; ValueError,
    saying what is wrong, for anything else."""
    if spec in SHIPPED:
        return SHIPPED[spec]
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"preference {spec!r}: expected 'package.module:function' or one of {', '.join(SHIPPED)}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"preference {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    if not hasattr(module, attribute):
        raise ValueError(f"preference {spec!r}: module {module_name!r} has no attribute {attribute!r}")
    function = getattr(module, attribute)
    if not callable(function):
        raise ValueError(f"preference {spec!r}: {module_name}.{attribute} is not callable")
    return function
