"""The domain's exceptions reach clients as the OpenAI-shaped HTTP errors they always were (server/errors.py)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from core.errors import ChatloopError, InProgress, InvalidInput, NotFound, RateLimited
from core.routing import Routing, promote, rollback
from server.errors import DOMAIN_STATUSES, domain_error_response


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


def test_a_rate_limit_says_when_to_retry() -> None:
    response = domain_error_response(RateLimited("Too much feedback.", retry_after_s=17))
    assert response.headers["Retry-After"] == "17"
    assert "Retry-After" not in domain_error_response(NotFound("gone")).headers


def test_every_kind_of_domain_error_has_a_status() -> None:
    assert set(ChatloopError.__subclasses__()) == set(DOMAIN_STATUSES)
