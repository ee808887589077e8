"""Which answers may become training data: only what the routed policy wrote freely, for someone allowed to teach.

Whoever shapes the pairs shapes the model everyone talks to. An answer whose text the caller forced (a JSON schema
with a ``const``, a stop string that cuts it where the caller wants, generation past the end of the answer) or
whose version the caller chose is not evidence of what the policy does when people talk to it: rated up against a
free answer rated down, it would put the caller's text into the preference stage and the reward model word for
word. Such answers are still served, recorded, rateable and counted in the statistics; they make no pair, no
prompt for the trainer and no canary vote, and the feedback event says why (``feedback/gestures.py``).

The reasons are decided when the answer is recorded, from its recorded parameters, and kept in its record.
"""

from __future__ import annotations

from collections.abc import Mapping

CONSTRAINED = "constrained_decoding"
"""``response_format`` other than text, a forced ``tool_choice`` (``required`` or a named function), ``ignore_eos``
or a stop string shaped the text."""
RAW_PROMPT = "raw_prompt"
"""A completion of raw text (``/v1/completions``), which no chat template rendered: the trainer learns chat
prompts, and would teach the answer for a prompt the model never saw."""
PINNED = "pinned_version"
"""A non-admin caller chose the version (``chatloop@vN``) instead of the routing."""
NOT_A_TEACHER = "principal_may_not_teach"
"""The API key or account is not allowed to teach (its ``train`` flag is off)."""


def constrained(params: Mapping[str, object]) -> bool:
    """Whether the recorded sampling parameters forced any part of the text."""
    response_format = params.get("response_format")
    shaped = isinstance(response_format, Mapping) and response_format.get("type", "text") != "text"
    forced_call = params.get("tool_choice") not in (None, "none", "auto")
    return shaped or forced_call or bool(params.get("ignore_eos")) or bool(params.get("stop"))


def ineligible_reasons(
    params: Mapping[str, object],
    *,
    pinned: bool,
    by_admin: bool,
    may_teach: bool,
    raw_prompt: bool = False,
) -> list[str]:
    """Why an answer may not be training data; empty when it may."""
    reasons = []
    if constrained(params):
        reasons.append(CONSTRAINED)
    if raw_prompt:
        reasons.append(RAW_PROMPT)
    if pinned and not by_admin:
        reasons.append(PINNED)
    if not may_teach:
        reasons.append(NOT_A_TEACHER)
    return reasons
