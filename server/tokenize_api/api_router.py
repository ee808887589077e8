"""HTTP routes of ``/tokenize`` and ``/detokenize`` (vLLM's extensions of the OpenAI API): for a signed-in caller,
within the caller's request rate and concurrency, as chat is (``server/limits.py``)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from server.dependencies import CallerDep, ChatLimiterDep, TokenizationDep
from server.tokenize_api.protocol import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from server.unicode_body import UnicodeBodyRoute

router = APIRouter(route_class=UnicodeBodyRoute)


@router.post("/tokenize")
async def tokenize(
    body: TokenizeRequest, response: Response, caller: CallerDep, limiter: ChatLimiterDep, service: TokenizationDep
) -> TokenizeResponse:
    async with limiter.admitted(caller, response):
        return service.tokenize(body)


@router.post("/detokenize")
async def detokenize(
    body: DetokenizeRequest, response: Response, caller: CallerDep, limiter: ChatLimiterDep, service: TokenizationDep
) -> DetokenizeResponse:
    async with limiter.admitted(caller, response):
        return service.detokenize(body)
