"""What the terminal client prints of an answer: no control sequence survives, however the stream splits it."""

from __future__ import annotations

import itertools

import pytest

from client.control_sequences import MAX_HELD, printable, strip

ANSWER = (
    "red \x1b[1;31mhot\x1b[0m, title\x1b]0;pwned\x07, link \x1b]8;;https://evil.example\x1b\\here\x1b]8;;\x1b\\, "
    "clipboard\x1b]52;c;cm0gLXJmIH4=\x1b\\, clear\x9b2J\x1b[H, osc\x9d2;t\x9c, charset\x1b(B, "
    "bell\x07 cr\r bs\x08 del\x7f nul\x00 tab\t nl\n end"
)
SHOWN = "red hot, title, link here, clipboard, clear, osc, charset, bell cr bs del nul tab\t nl\n end"
DISARMING = {"\x1b", *map(chr, range(0x80, 0xA0))}


def streamed(pieces: list[str]) -> str:
    """What the client prints of an answer that arrives in ``pieces``: what the last piece leaves held is dropped."""
    shown, held = [], ""
    for piece in pieces:
        out, held = printable(held, piece)
        shown.append(out)
    return "".join(shown)


def test_strip_keeps_text_newlines_and_tabs_only() -> None:
    assert strip(ANSWER) == SHOWN
    assert strip("plain text, ünïcode 漢字 🙂\n\tindented") == "plain text, ünïcode 漢字 🙂\n\tindented"


def test_every_split_in_two_or_three_pieces_prints_the_same() -> None:
    for i, j in itertools.combinations_with_replacement(range(len(ANSWER) + 1), 2):
        assert streamed([ANSWER[:i], ANSWER[i:j], ANSWER[j:]]) == SHOWN, (i, j)


def test_a_character_at_a_time_prints_the_same() -> None:
    assert streamed(list(ANSWER)) == SHOWN


@pytest.mark.parametrize(
    "pieces, shown",
    [
        (["before \x1b[3", "1mred"], "before red"),
        (["\x1b", "[", "3", "1", "m", "red"], "red"),
        (["\x1b]0;ti", "tle\x1b", "\\after"], "after"),
        (["a\x9b", "2Jb"], "ab"),
    ],
)
def test_a_split_sequence_is_held_until_it_ends(pieces: list[str], shown: str) -> None:
    assert streamed(pieces) == shown


def test_an_answer_ending_in_an_unfinished_sequence_prints_none_of_it() -> None:
    printed, held = printable("", "done\x1b]0;tit")
    assert (printed, held) == ("done", "\x1b]0;tit")
    assert streamed(["done\x1b", "[3"]) == "done"


def test_a_sequence_that_never_ends_is_let_go_disarmed() -> None:
    """An OSC string with no terminator would otherwise hold the rest of the answer back."""
    pieces = ["start \x1b]0;", *["word " for _ in range(MAX_HELD)], "\x1b\\end"]
    printed = streamed(pieces)
    assert printed.startswith("start 0;word word") and printed.endswith("word end")
    assert not DISARMING & set(printed)
    held = ""
    for piece in pieces[:-1]:
        _, held = printable(held, piece)
        assert len(held) <= MAX_HELD


def test_no_escape_or_c1_character_is_ever_printed() -> None:
    """However an answer full of sequences, broken ones included, is split, nothing that starts one gets through."""
    hostile = "\x1b]0;a\x1b[31m\x1b\x1b[\x9b\x9d\x1b]8;;x\x07\x1b(\x1b]" + ANSWER
    for i, j in itertools.combinations_with_replacement(range(len(hostile) + 1), 2):
        assert not DISARMING & set(streamed([hostile[:i], hostile[i:j], hostile[j:]])), (i, j)
