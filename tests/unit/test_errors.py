"""The domain's exceptions reach clients as the OpenAI-shaped HTTP errors they always were (server/errors.py)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from core.contention import attempts
from core.errors import ChatloopError, Contended, InProgress, InvalidInput, NotFound, RateLimited
from core.routing import Routing, promote, rollback
from server.chat_api.protocol import ChatCompletionRequest
from server.errors import DOMAIN_STATUSES, domain_error_response, validation_error_response


def raised(action: Callable[[], object]) -> ChatloopError:
    """The error a real raise site raises, rather than one built to look like it."""
    with pytest.raises(ChatloopError) as caught:
        action()
    return caught.value


@pytest.mark.parametrize(
    ("error", "status", "kind", "param", "code"),
    [
        (raised(lambda: promote(Routing(), {}, "v9", None)), 404, "not_found_error", "version", "version_not_found"),
        (raised(lambda: rollback(Routing())), 409, "conflict_error", None, "invalid_state"),
        (
            NotFound("No completion found.", param="completion_id", code="completion_not_found"),
            404,
            "not_found_error",
            "completion_id",
            "completion_not_found",
        ),
        (
            InProgress("Still being generated.", param="completion_id", code="completion_in_progress"),
            409,
            "conflict_error",
            "completion_id",
            "completion_in_progress",
        ),
        (InvalidInput("Same answer.", param="rejected"), 400, "invalid_request_error", "rejected", None),
        (raised(lambda: list(attempts("The routing", limit=2))), 503, "service_unavailable", None, "contended"),
        (
            RateLimited("Too much feedback.", retry_after_s=17, code="rate_limit_exceeded"),
            429,
            "rate_limit_error",
            None,
            "rate_limit_exceeded",
        ),
    ],
)
def test_each_domain_error_keeps_its_status_and_shape(
    error: ChatloopError, status: int, kind: str, param: str | None, code: str | None
) -> None:
    response = domain_error_response(error)
    assert response.status_code == status
    assert json.loads(response.body) == {
        "error": {"message": error.message, "type": kind, "param": param, "code": code}
    }


def test_a_rate_limit_and_a_contended_change_say_when_to_retry() -> None:
    response = domain_error_response(RateLimited("Too much feedback.", retry_after_s=17))
    assert response.headers["Retry-After"] == "17"
    assert domain_error_response(raised(lambda: list(attempts("The routing")))).headers["Retry-After"] == "1"
    assert "Retry-After" not in domain_error_response(NotFound("gone")).headers


def test_a_bounded_loop_tries_as_often_as_its_limit_then_refuses() -> None:
    tried = []
    with pytest.raises(Contended):
        for attempt in attempts("The routing", limit=3):
            tried.append(attempt)
    assert tried == [0, 1, 2]


def kinds(error: type[ChatloopError]) -> set[type[ChatloopError]]:
    """The kinds that are raised: those no other kind refines."""
    below = error.__subclasses__()
    return set().union(*map(kinds, below)) if below else {error}


def test_every_kind_of_domain_error_has_a_status() -> None:
    assert kinds(ChatloopError) == set(DOMAIN_STATUSES)


def chat_body_error(**change: object) -> dict:
    """The error a chat body with ``change`` gets, as FastAPI reports a body's validation errors (under ``body``)."""
    body = {"model": "chatloop", "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate(body)
    errors = [{**error, "loc": ("body", *error["loc"])} for error in caught.value.errors()]
    response = validation_error_response(RequestValidationError(errors))
    assert response.status_code == 400
    return json.loads(response.body)["error"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"seed": 2**64}, "seed"),
        ({"seed": -(2**63) - 1}, "seed"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"n": 0}, "n"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"metadata": {"k": 7}}, "metadata.k"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": "x" * 257}, "stop"),
    ],
)
def test_a_chat_body_out_of_bounds_is_400_naming_its_parameter(change: dict, param: str) -> None:
    error = chat_body_error(**change)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, None)
    assert error["message"].startswith(f"Invalid value for '{param}'")


@pytest.mark.parametrize("name", ["functions", "function_call", "logit_bias", "service_tier"])
def test_an_unsupported_parameter_is_400_unsupported_parameter(name: str) -> None:
    error = chat_body_error(**{name: [{"type": "function"}]})
    assert error == {
        "message": f"Unsupported parameter: '{name}' is not supported by chatloop yet.",
        "type": "invalid_request_error",
        "param": name,
        "code": "unsupported_parameter",
    }
