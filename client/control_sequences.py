"""Control sequences out of text bound for a terminal: an answer is the model's text, and the model learns from
whoever talks to it, so it may write what a terminal obeys (ANSI/OSC escape sequences that recolour, retitle, move
the cursor, write hyperlinks or the clipboard; other C0 and C1 control characters).

An answer arrives in pieces that may split a sequence. ``printable`` holds back an unfinished sequence at the end of
a piece until the rest arrives, so that a sequence is removed whole however it is split; and whatever is left of a
sequence that never ends properly loses its ESC and C1 characters, which disarms it. Newline and tab are kept.
"""

from __future__ import annotations

import re

SEQUENCE = re.compile(
    r"""
      (?:\x1b\[|\x9b) [\x30-\x3f]* [\x20-\x2f]* [\x40-\x7e]               # CSI: colours, cursor, erasing
    | (?:\x1b[]PX^_]|[\x90\x98\x9d-\x9f]) [^\x07\x1b\x9c]* (?:\x07|\x1b\\|\x9c)  # OSC, DCS, SOS, PM, APC strings
    | \x1b [\x20-\x2f]* [\x30-\x7e]                                      # any other escape sequence
    """,
    re.VERBOSE,
)
UNFINISHED = re.compile(
    r"""
    (?:
      (?:\x1b\[|\x9b) [\x30-\x3f]* [\x20-\x2f]*
    | (?:\x1b[]PX^_]|[\x90\x98\x9d-\x9f]) [^\x07\x1b\x9c]* \x1b?
    | \x1b [\x20-\x2f]*
    )\Z
    """,
    re.VERBOSE,
)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
MAX_HELD = 256
"""Longest unfinished sequence held back; a longer one is let go disarmed rather than hold the answer up."""


def strip(text: str) -> str:
    """``text`` without control sequences, and without control characters but newline and tab."""
    return CONTROL.sub("", SEQUENCE.sub("", text))


def printable(held: str, piece: str) -> tuple[str, str]:
    """What to print of the next ``piece`` of a stream, and what to hold back until the piece after it: the
    unfinished sequence at its end, if any. ``held`` is what the previous call held back; what the last one holds
    is an unfinished sequence, to drop."""
    text = held + piece
    unfinished = UNFINISHED.search(text)
    cut = unfinished.start() if unfinished and len(text) - unfinished.start() <= MAX_HELD else len(text)
    return strip(text[:cut]), text[cut:]
