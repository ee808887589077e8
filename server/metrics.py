"""Prometheus metrics of the HTTP layer, and the ASGI middleware that counts every request.

The middleware is plain ASGI rather than Starlette's ``BaseHTTPMiddleware``: the latter wraps every streamed
body in an extra task and queue, a cost we would pay on each SSE chunk. The engine's own metrics (``vllm:*``)
are registered in the same default registry by vLLM and appear on ``/metrics`` beside ours.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)

REQUESTS = Counter("chatloop_requests_total", "HTTP requests by endpoint and status", ["endpoint", "status"])
IN_FLIGHT = Gauge("chatloop_requests_in_flight", "HTTP requests being served", ["endpoint"])
LATENCY = Histogram(
    "chatloop_request_latency_seconds", "Request start to last byte sent", ["endpoint"], buckets=LATENCY_BUCKETS
)
TIME_TO_FIRST_TOKEN = Histogram(
    "chatloop_time_to_first_token_seconds", "Chat request start to its first generated token", buckets=LATENCY_BUCKETS
)
PROMPT_TOKENS = Counter("chatloop_prompt_tokens_total", "Prompt tokens of chat completions")
COMPLETION_TOKENS = Counter("chatloop_completion_tokens_total", "Generated tokens of chat completions")
ABORTED = Counter("chatloop_completions_aborted_total", "Chat completions stopped because the client went away")
RECORD_FAILURES = Counter("chatloop_record_failures_total", "Completion records that could not be written to Redis")
LOOP_STALLS = Counter("chatloop_event_loop_stalls_total", "Times the API's event loop stood still past the threshold")
RECORDS_WAITING = Gauge("chatloop_records_waiting", "Completion records kept in memory until Redis takes them")
RECORDS_DROPPED = Counter("chatloop_records_dropped_total", "Completion records never written: memory's backlog full")

KNOWN_ENDPOINTS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/completions",
        "/tokenize",
        "/detokenize",
        "/v1/feedback",
        "/v1/feedback/stats",
        "/v1/models",
        "/health",
        "/ready",
        "/metrics",
    }
)


def endpoint_label(path: str) -> str:
    """Bound the label's values: unknown paths (scanners, typos) share one label, and a stored response's routes
    one each whatever its id."""
    if path in KNOWN_ENDPOINTS:
        return path
    if path.startswith("/v1/responses/"):
        return "/v1/responses/{id}/cancel" if path.endswith("/cancel") else "/v1/responses/{id}"
    return "other"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_label(scope["path"])
        start = time.perf_counter()
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        IN_FLIGHT.labels(endpoint).inc()
        try:
            await self.app(scope, receive, counting_send)
        finally:
            IN_FLIGHT.labels(endpoint).dec()
            LATENCY.labels(endpoint).observe(time.perf_counter() - start)
            REQUESTS.labels(endpoint, str(status)).inc()
