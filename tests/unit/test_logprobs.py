"""Conversion of vLLM's per-position logprob candidates into OpenAI's shape."""

from __future__ import annotations

from vllm.logprobs import Logprob

from server.answers.prepared import MIN_LOGPROB, token_logprobs


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
