"""Prometheus metrics of one worker process, and the listener that serves them.

A worker is one process (Celery's solo pool, one process per GPU), so each process keeps one
plain registry and serves it on its own port (EMBEDQ_WORKER_METRICS_PORT; in compose every
worker container uses 9200). prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR and
a MultiProcessCollector) exists for processes that share one port, such as gunicorn or Celery
prefork children; nothing here shares a port, so it is not used. Run two workers on one host
with two ports (or two containers).

Every series carries the process's model (manifest id), backend and device, so dashboards can
split a fleet by them; `embedq_worker_info` carries them once more with the model's precision,
dimension and source. Instrumented code calls the functions at the bottom of this module; they
record into this process's registry whether or not a listener serves it (tests, the CLI), at a
cost of microseconds.

Which work an engine batch belongs to (`work`: job, query or reembed) and which batch its
tokenise and engine times count towards are known from the thread: a job batch's delivery runs
start to end on the consumer's thread (start_batch .. BatchTimer.finish), live queries are the
engine's urgent calls, and any other embedding in a worker is a re-embedding step.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)

from embedq_core.manifest import ModelManifest
from embedq_core.metrics_auth import metrics_authorized
from embedq_core.settings import Settings

if TYPE_CHECKING:
    from workers.engine import Embedder

log = logging.getLogger(__name__)

BASE_LABELS = ("model", "backend", "device")
STAGES = ("queue_wait", "claim", "tokenize", "engine", "write")
# From a claim (milliseconds) to a batch stuck behind a backlog (an hour).
STAGE_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
QUERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_resident_memory_bytes, process_cpu_seconds_total
PlatformCollector(registry=REGISTRY)


def _labels(*extra: str) -> list[str]:
    return [*BASE_LABELS, *extra]


INFO = Gauge(
    "embedq_worker_info",
    "1 per worker process; its model, backend, device and the model's precision",
    _labels("precision", "dimension", "source"),
    registry=REGISTRY,
)
READY = Gauge(
    "embedq_worker_ready",
    "1 while the worker consumes its model's queues (model loaded, Celery consumer started)",
    BASE_LABELS,
    registry=REGISTRY,
)
TEXTS = Counter(
    "embedq_worker_texts_embedded",
    "Texts embedded; work is job (batches of jobs), query (live queries) or reembed",
    _labels("work"),
    registry=REGISTRY,
)
TOKENS = Counter(
    "embedq_worker_tokens_embedded",
    "Real tokens embedded (after truncation, special tokens and query instruction included)",
    _labels("work"),
    registry=REGISTRY,
)
PADDED_TOKENS = Counter(
    "embedq_worker_padded_tokens",
    "Token slots the engine computed, padding included (padding ratio = 1 - tokens / this)",
    _labels("work"),
    registry=REGISTRY,
)
ENGINE_SECONDS = Counter(
    "embedq_worker_engine_seconds",
    "Time in the engine: inference, pooling, normalisation (tokens/s = rate(tokens) / rate(this))",
    _labels("work"),
    registry=REGISTRY,
)
TOKENIZE_SECONDS = Counter(
    "embedq_worker_tokenize_seconds",
    "Time tokenising and padding",
    _labels("work"),
    registry=REGISTRY,
)
ENGINE_BATCHES = Counter(
    "embedq_worker_engine_batches",
    "Engine batches run (length-sorted, cut by the token budget)",
    _labels("work"),
    registry=REGISTRY,
)
TOKENS_PER_SECOND = Gauge(
    "embedq_worker_engine_tokens_per_second",
    "Real tokens per engine second of the last engine batch",
    _labels("work"),
    registry=REGISTRY,
)
PADDING_RATIO = Gauge(
    "embedq_worker_padding_ratio",
    "Share of the last engine batch's token slots that were padding",
    _labels("work"),
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "embedq_worker_batch_stage_seconds",
    "Per job-batch delivery, time in each stage: queue_wait (last send to claim), claim, "
    "tokenize, engine, write; a stage is observed for each delivery that reached it",
    _labels("stage"),
    buckets=STAGE_BUCKETS,
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "embedq_worker_batch_seconds",
    "Claim to commit of each job-batch delivery that stored its items",
    BASE_LABELS,
    buckets=STAGE_BUCKETS,
    registry=REGISTRY,
)
BATCHES = Counter(
    "embedq_worker_batches",
    "Job-batch deliveries by outcome: stored, skipped (done already, job gone, another worker "
    "holds it) or failed (raised; the reconciler sends it again)",
    _labels("outcome"),
    registry=REGISTRY,
)
COALESCED = Counter(
    "embedq_worker_coalesced_batches",
    "Small batches claimed by another batch's delivery and embedded in the same engine call "
    "(each is still written and finished on its own)",
    BASE_LABELS,
    registry=REGISTRY,
)
ITEMS = Counter(
    "embedq_worker_items",
    "Job items finished, by result: embedded, unchanged, superseded or failed",
    _labels("result"),
    registry=REGISTRY,
)
ERRORS = Counter(
    "embedq_worker_errors",
    "Errors by kind: embed, write, gave_up, wrong_model (per item); delivery, db_transient "
    "(per batch delivery or retried transaction); query; task (a Celery task raised)",
    _labels("kind"),
    registry=REGISTRY,
)
RETRIES = Counter(
    "embedq_worker_retries",
    "Retries by kind: redelivery (a delivery of a batch already attempted), db (a transaction "
    "run again after a transient database error), claim_requeued (a message put back on the "
    "queue: Postgres stayed unreachable through db_retry_timeout_s before the claim)",
    _labels("kind"),
    registry=REGISTRY,
)
QUERIES = Counter(
    "embedq_worker_queries",
    "Live queries by outcome: ok, error, expired (the caller had given up)",
    _labels("outcome"),
    registry=REGISTRY,
)
QUERY_SECONDS = Histogram(
    "embedq_worker_query_seconds",
    "Live query latency in the worker, taken to answered (the engine waits for at most one "
    "bulk engine batch)",
    BASE_LABELS,
    buckets=QUERY_BUCKETS,
    registry=REGISTRY,
)
TASKS = Counter(
    "embedq_worker_tasks",
    "Celery tasks run, by task name and final state",
    _labels("task", "state"),
    registry=REGISTRY,
)

# This process's model, backend and device: set once the model is loaded (configure).
_base: dict[str, str] = {"model": "", "backend": "", "device": ""}
_ready = threading.Event()
_local = threading.local()


def device_of(backend: str) -> str:
    """The device a backend runs on: cuda:<the GPUs visible to this process> or cpu."""
    if backend.endswith("cuda"):
        return f"cuda:{os.environ.get('CUDA_VISIBLE_DEVICES') or '0'}"
    return "cpu"


def configure(manifest: ModelManifest, backend: str) -> None:
    """Label this process's series with its model, backend and device."""
    _base.update(model=manifest.manifest_id, backend=backend, device=device_of(backend))
    INFO.labels(
        **_base,
        precision=manifest.precision,
        dimension=str(manifest.dimension),
        source=manifest.source,
    ).set(1)
    READY.labels(**_base).set(0)


def set_ready(ready: bool) -> None:
    """The worker started (or stopped) consuming its queues."""
    if ready:
        _ready.set()
    else:
        _ready.clear()
    READY.labels(**_base).set(1 if ready else 0)


def is_ready() -> bool:
    """Whether the worker consumes its queues (what /healthz answers)."""
    return _ready.is_set()


class BatchTimer:
    """Times the stages of one job-batch delivery on the consumer's thread."""

    def __init__(self) -> None:
        self._started = time.perf_counter()
        self._stages: dict[str, float] = {}
        self.outcome = "skipped"

    def add(self, stage: str, seconds: float) -> None:
        """Count time towards a stage."""
        self._stages[stage] = self._stages.get(stage, 0.0) + seconds

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a block as a stage."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def queue_wait(self, seconds: float | None) -> None:
        """How long the batch waited from its last send to this claim (None: unknown)."""
        if seconds is not None:
            self.add("queue_wait", seconds)

    def hand_over(self) -> None:
        """This thread is done with the batch; another thread goes on with it (take_over)."""
        if getattr(_local, "timer", None) is self:
            _local.timer = None

    def take_over(self) -> None:
        """This thread goes on with the batch: its stages count towards this timer."""
        _local.timer = self

    def finish(self) -> None:
        """Record the delivery; the thread has no current batch afterwards."""
        if getattr(_local, "timer", None) is self:
            _local.timer = None
        BATCHES.labels(**_base, outcome=self.outcome).inc()
        for stage, seconds in self._stages.items():
            STAGE_SECONDS.labels(**_base, stage=stage).observe(seconds)
        if self.outcome == "stored":
            BATCH_SECONDS.labels(**_base).observe(time.perf_counter() - self._started)


def start_batch() -> BatchTimer:
    """A job-batch delivery starts on this thread; finish() the timer when it ends."""
    timer = BatchTimer()
    _local.timer = timer
    return timer


def _current() -> BatchTimer | None:
    timer: BatchTimer | None = getattr(_local, "timer", None)
    return timer


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time a block as a stage of this thread's current batch (no batch: not recorded)."""
    timer = _current()
    if timer is None:
        yield
        return
    with timer.stage(name):
        yield


def _work(urgent: bool) -> str:
    if urgent:
        return "query"
    return "job" if _current() is not None else "reembed"


class EngineMetrics:
    """The engine's observer (workers/engine/observer.py) in a worker."""

    def prepared(self, texts: int, seconds: float, urgent: bool) -> None:
        """Tokenising and padding of one embed call."""
        TOKENIZE_SECONDS.labels(**_base, work=_work(urgent)).inc(seconds)
        timer = _current()
        if timer is not None and not urgent:
            timer.add("tokenize", seconds)

    def engine_batch(
        self, texts: int, tokens: int, padded_tokens: int, seconds: float, urgent: bool
    ) -> None:
        """One engine batch."""
        labels = {**_base, "work": _work(urgent)}
        TEXTS.labels(**labels).inc(texts)
        TOKENS.labels(**labels).inc(tokens)
        PADDED_TOKENS.labels(**labels).inc(padded_tokens)
        ENGINE_SECONDS.labels(**labels).inc(seconds)
        ENGINE_BATCHES.labels(**labels).inc()
        if seconds > 0:
            TOKENS_PER_SECOND.labels(**labels).set(tokens / seconds)
        if padded_tokens > 0:
            PADDING_RATIO.labels(**labels).set(1.0 - tokens / padded_tokens)
        timer = _current()
        if timer is not None and not urgent:
            timer.add("engine", seconds)


class Outcome(Protocol):
    """What a stored delivery did (workers/batch.py's BatchOutcome)."""

    @property
    def done(self) -> int:
        """Items done, unchanged and superseded ones included."""
        raise NotImplementedError

    @property
    def failed(self) -> int:
        """Items failed."""
        raise NotImplementedError

    @property
    def unchanged(self) -> int:
        """Items whose text and model were unchanged (metadata refreshed)."""
        raise NotImplementedError

    @property
    def superseded(self) -> int:
        """Items a newer submission had already replaced."""
        raise NotImplementedError


def batch_stored(outcome: Outcome) -> None:
    """This thread's delivery committed: count its items by result."""
    timer = _current()
    if timer is not None:
        timer.outcome = "stored"
    embedded = outcome.done - outcome.unchanged - outcome.superseded
    for result, count in (
        ("embedded", embedded),
        ("unchanged", outcome.unchanged),
        ("superseded", outcome.superseded),
        ("failed", outcome.failed),
    ):
        if count:
            ITEMS.labels(**_base, result=result).inc(count)


def coalesced(batches: int) -> None:
    """This delivery embeds `batches` other waiting small batches with its own."""
    COALESCED.labels(**_base).inc(batches)


def batch_failed(transient: bool) -> None:
    """This thread's delivery raised (transient: the database stayed unreachable)."""
    timer = _current()
    if timer is not None:
        timer.outcome = "failed"
    error("db_transient" if transient else "delivery")


def items_failed(
    failures: Iterable[str],
    gave_up: Collection[str] = (),
    embed_errors: Collection[str] = (),
    kind: str = "write",
) -> None:
    """Items that failed in a committed delivery, by why: gave_up (out of attempts), embed (the
    engine refused the text) or `kind` (by default write: the database refused the row)."""
    for external_id in failures:
        if external_id in gave_up:
            error("gave_up")
        elif external_id in embed_errors:
            error("embed")
        else:
            error(kind)


def error(kind: str, count: int = 1) -> None:
    """Count errors of a kind."""
    ERRORS.labels(**_base, kind=kind).inc(count)


def retry(kind: str) -> None:
    """Count a retry of a kind."""
    RETRIES.labels(**_base, kind=kind).inc()


def query_answered(seconds: float, ok: bool) -> None:
    """A live query was answered (with vectors, or with the worker's error)."""
    QUERY_SECONDS.labels(**_base).observe(seconds)
    QUERIES.labels(**_base, outcome="ok" if ok else "error").inc()
    if not ok:
        error("query")


def query_expired() -> None:
    """A live query was dropped: its caller had given up."""
    QUERIES.labels(**_base, outcome="expired").inc()


def _task_postrun(task: Any = None, state: str | None = None, **_: Any) -> None:
    name = getattr(task, "name", None) or "unknown"
    TASKS.labels(**_base, task=name, state=(state or "unknown").lower()).inc()


def _task_failure(**_: Any) -> None:
    error("task")


def _worker_ready(**_: Any) -> None:
    set_ready(True)


def _worker_stopping(**_: Any) -> None:
    set_ready(False)


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
            target=self._server.serve_forever, name="embedq-metrics", daemon=True
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


def start(settings: Settings, embedder: Embedder) -> MetricsListener | None:
    """Label this process's metrics with its loaded model, have the engine and Celery report to
    them, and serve them when EMBEDQ_WORKER_METRICS_PORT is set (None otherwise)."""
    configure(embedder.manifest, embedder.backend)
    embedder.observer = EngineMetrics()
    _connect_celery_signals()
    if settings.worker_metrics_port == 0:
        return None
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    listener = MetricsListener(
        settings.worker_metrics_host, settings.worker_metrics_port, REGISTRY, token, is_ready
    )
    listener.start()
    log.info(
        "metrics on http://%s:%d/metrics (%s), readiness on /healthz",
        settings.worker_metrics_host,
        listener.port,
        "bearer token" if token else "no token: keep the port private",
    )
    return listener
