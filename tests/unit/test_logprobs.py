"""Conversion of vLLM's per-position logprob candidates into OpenAI's shape."""

from __future__ import annotations

from vllm.logprobs import Logprob

from server.answers.prepared import MIN_LOGPROB, token_logprobs
from server.completions_api.serving import completion_logprobs


def test_sampled_token_and_ranked_alternatives() -> None:
    candidates = {
        7: Logprob(logprob=-0.5, rank=2, decoded_token=" b"),
        3: Logprob(logprob=-0.2, rank=1, decoded_token=" a"),
        9: Logprob(logprob=-3.0, rank=3, decoded_token=" c"),
    }
    (entry,) = token_logprobs([7], [candidates], top_n=2)
    assert entry.token == " b" and entry.logprob == -0.5 and entry.bytes == list(b" b")
    assert [alt.token for alt in entry.top_logprobs] == [" a", " b"]


def test_minus_infinity_is_clamped_for_json() -> None:
    (entry,) = token_logprobs([1], [{1: Logprob(logprob=float("-inf"), rank=5, decoded_token="x")}], top_n=0)
    assert entry.logprob == MIN_LOGPROB and entry.top_logprobs == []


def test_a_completions_alternatives_hold_the_sampled_token_and_offsets_follow_the_tokens() -> None:
    """OpenAI's text completions: "up to logprobs+1 elements", the sampled token always among them. A streamed
    chunk's offsets go on from the tokens before it (``start``), not from the text sent, which a stop string holds
    back."""
    candidates = {
        7: Logprob(logprob=-2.0, rank=3, decoded_token=" c"),
        3: Logprob(logprob=-0.2, rank=1, decoded_token=" a"),
        9: Logprob(logprob=-1.0, rank=2, decoded_token=" bb"),
    }
    entries = token_logprobs([7, 9], [candidates, candidates], top_n=1)
    scored = completion_logprobs(entries, start=4)
    assert scored.top_logprobs == [{" c": -2.0, " a": -0.2}, {" bb": -1.0, " a": -0.2}]
    assert scored.tokens == [" c", " bb"] and scored.text_offset == [4, 6]
    assert completion_logprobs(token_logprobs([3], [candidates], top_n=0)).top_logprobs == [{" a": -0.2}]
