"""Request metrics: counts, latency and sizes per route template and status.

A pure ASGI middleware, outermost, so it sees every answer: those of the routes, the error
handlers, and the body limit's 408/413/422 given before routing. Routes are labelled by their
template (`/v1/jobs/{job_id}`), never the raw path, so ids do not multiply the series; a path
no route matches is `unmatched`. 401/413/422/429/503 counts are the `status` label.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.routing import BaseRoute, Match

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

UNMATCHED = "unmatched"
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
# From an empty GET to the 16 MiB default body limit.
SIZE_BUCKETS = tuple(float(4**n) for n in range(3, 13))


class HttpMetrics:
    """The request series, in one app's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "embedq_http_requests",
            "Requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "embedq_http_request_duration_seconds",
            "Time from the request's arrival to the end of its answer",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.request_size = Histogram(
            "embedq_http_request_size_bytes",
            "Request body bytes received",
            ["method", "route"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.response_size = Histogram(
            "embedq_http_response_size_bytes",
            "Response body bytes sent",
            ["method", "route"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.in_progress = Gauge(
            "embedq_http_requests_in_progress", "Requests being answered now", registry=registry
        )


def route_template(scope: Scope, routes: list[BaseRoute]) -> str:
    """The template of the route that took (or would take) the request."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    # Answered before routing (the key gate, the body limit), or no route at all.
    return _matching_template(scope, routes) or UNMATCHED


def _matching_template(scope: Scope, routes: Iterable[Any]) -> str | None:
    for candidate in routes:
        # FastAPI keeps an included router as one entry; its effective routes carry the
        # full templates.
        nested = getattr(candidate, "effective_candidates", None)
        if callable(nested):
            found = _matching_template(scope, nested())
            if found is not None:
                return found
            continue
        match, _ = candidate.matches(scope)
        if match is not Match.NONE:
            candidate_path = getattr(candidate, "path", None)
            return candidate_path if isinstance(candidate_path, str) else None
    return None


class RequestMetrics:
    """Counts every HTTP request into HttpMetrics."""

    def __init__(
        self, app: App, metrics: HttpMetrics, routes: Callable[[], list[BaseRoute]]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        received = 0
        sent = 0
        status = 500  # an exception escaping the app is answered 500 by Starlette

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal sent, status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            self.metrics.in_progress.dec()
            method = scope.get("method", "")
            method = method if method in METHODS else "other"  # clients choose it: bound it
            route = route_template(scope, self.routes())
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
            self.metrics.request_size.labels(method, route).observe(received)
            self.metrics.response_size.labels(method, route).observe(sent)
