"""Serving a worker's metrics: the listener for /metrics and /healthz on the process's registry
(workers/telemetry/series.py), and the hooks (Celery's signals, the engine's observer) that record
into it through workers/telemetry/metrics.py. start() wires both."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app

from embedq_core.metrics_auth import metrics_authorized
from embedq_core.settings import Settings
from workers.telemetry import metrics
from workers.telemetry import series as metric_series

if TYPE_CHECKING:
    from workers.context import WorkerContext

log = logging.getLogger(__name__)

SHUTDOWN_POLL_S = 0.1


def _task_postrun(task: Any = None, state: str | None = None, **_: Any) -> None:
    metrics.task_finished(getattr(task, "name", None) or "unknown", state or "unknown")


def _task_failure(**_: Any) -> None:
    metrics.error("task")


def _worker_ready(**_: Any) -> None:
    metrics.set_ready(True)


def _worker_stopping(**_: Any) -> None:
    metrics.set_ready(False)


_signals_connected = False


def _connect_celery_signals() -> None:
    global _signals_connected
    if _signals_connected:
        return
    from celery import signals

    signals.task_postrun.connect(_task_postrun, weak=False)
    signals.task_failure.connect(_task_failure, weak=False)
    signals.worker_ready.connect(_worker_ready, weak=False)
    signals.worker_shutting_down.connect(_worker_stopping, weak=False)
    _signals_connected = True


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the worker's log."""


class MetricsListener:
    """Serves /metrics (the registry; bearer token when one is set) and /healthz (200 while
    ready, 503 otherwise; no token, it says nothing else) in a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        token: str | None,
        ready: Callable[[], bool],
    ) -> None:
        self._metrics = make_wsgi_app(registry)
        self._token = token
        self._ready = ready
        self._server = make_server(host, port, self._app, _ThreadingServer, _QuietHandler)
        self.port: int = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # How often serve_forever looks at its stop flag (default 0.5 s): stop waits for it.
            kwargs={"poll_interval": SHUTDOWN_POLL_S},
            name="embedq-metrics",
            daemon=True,
        )

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            ready = self._ready()
            status = "200 OK" if ready else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain")])
            return [b"ready\n" if ready else b"not ready\n"]
        if path != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if not metrics_authorized(environ.get("HTTP_AUTHORIZATION", ""), self._token):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")],
            )
            return [b"missing or wrong metrics token (Authorization: Bearer <token>)\n"]
        body: Iterable[bytes] = self._metrics(environ, start_response)
        return body

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start(settings: Settings, ctx: WorkerContext) -> MetricsListener | None:
    """Label this process's metrics with its loaded model and pipeline, have the engine and
    Celery report to them, and serve them when EMBEDQ_WORKER_METRICS_PORT is set (None
    otherwise)."""
    embedder = ctx.embedder
    pipeline = {
        "engine_streams": str(settings.engine_streams),
        "write_behind": _flag(ctx.mode.write_behind),
        "claim_ahead": _flag(ctx.mode.claim_ahead),
        "tokenise_ahead": _flag(ctx.tokenise_ahead),
    }
    metrics.configure(embedder.manifest, embedder.backend, pipeline)
    embedder.observer = metrics.EngineMetrics()
    _connect_celery_signals()
    return serve(settings)


def serve(settings: Settings) -> MetricsListener | None:
    """Serve this process's registry and readiness when EMBEDQ_WORKER_METRICS_PORT is set
    (None otherwise)."""
    if settings.worker_metrics_port == 0:
        return None
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    listener = MetricsListener(
        settings.worker_metrics_host,
        settings.worker_metrics_port,
        metric_series.REGISTRY,
        token,
        metrics.is_ready,
    )
    listener.start()
    log.info(
        "metrics on http://%s:%d/metrics (%s), readiness on /healthz",
        settings.worker_metrics_host,
        listener.port,
        "bearer token" if token else "no token: keep the port private",
    )
    return listener


def _flag(on: bool) -> str:
    return "true" if on else "false"
