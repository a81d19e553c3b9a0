"""Recording a worker's metrics: instrumented code calls the functions here, which label every
sample with the process's model, backend and device and record it into the process's registry
(workers/telemetry/series.py) whether or not a listener serves it (tests, the CLI), at a cost of
microseconds. workers/telemetry/listener.py serves the registry.

A worker is one process (Celery's solo pool, one process per GPU), so each process keeps one
plain registry, served on its own port (EMBEDQ_WORKER_METRICS_PORT; in compose every worker
container uses 9200). prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR and a
MultiProcessCollector) exists for processes that share one port, such as gunicorn or Celery
prefork children; nothing here shares a port, so it is not used. Run two workers on one host
with two ports (or two containers).

Which work an engine batch belongs to (`work`: job, query or reembed) and which batch its
tokenise and engine times count towards are known from the thread: a job batch's delivery runs
start to end on the consumer's thread (start_batch .. BatchTimer.finish), live queries are the
engine's urgent calls, and any other embedding in a worker is a re-embedding step.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

from embedq_core.manifest import ModelManifest
from workers.telemetry.series import (
    BATCH_SECONDS,
    BATCHES,
    COALESCED,
    ENGINE_BATCHES,
    ENGINE_SECONDS,
    ERROR_KINDS,
    ERRORS,
    INFO,
    INFO_PIPELINE_LABELS,
    ITEMS,
    PADDED_TOKENS,
    PADDING_RATIO,
    PREEMPTED_RUNS,
    PREEMPTED_SECONDS,
    QUERIES,
    QUERY_SECONDS,
    READY,
    RETRIES,
    STAGE_SECONDS,
    TASKS,
    TEXTS,
    TOKENIZE_SECONDS,
    TOKENS,
    TOKENS_PER_SECOND,
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


def configure(manifest: ModelManifest, backend: str, pipeline: Mapping[str, str]) -> None:
    """Label this process's series with its model, backend and device; `pipeline` gives
    embedq_worker_info's INFO_PIPELINE_LABELS."""
    _base.update(model=manifest.manifest_id, backend=backend, device=device_of(backend))
    INFO.labels(
        **_base,
        precision=manifest.precision,
        dimension=str(manifest.dimension),
        source=manifest.source,
        **{name: pipeline[name] for name in INFO_PIPELINE_LABELS},
    ).set(1)
    READY.labels(**_base).set(0)
    # Series that count rare events exist from the start at 0, so a dashboard or an alert on
    # their rate reads 0 rather than no data until the first event.
    for kind in ERROR_KINDS:
        ERRORS.labels(**_base, kind=kind)
    COALESCED.labels(**_base)
    QUERY_SECONDS.labels(**_base)
    PREEMPTED_RUNS.labels(**_base)
    PREEMPTED_SECONDS.labels(**_base)


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

    def preempted(self, seconds: float) -> None:
        """A bulk turn cancelled for a live query."""
        PREEMPTED_RUNS.labels(**_base).inc()
        PREEMPTED_SECONDS.labels(**_base).inc(seconds)


class Outcome(Protocol):
    """What a stored delivery did (workers/delivery/run.py's BatchOutcome)."""

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


def task_finished(task_name: str, state: str) -> None:
    """A Celery task ended in `state` (success, failure, retry, ...)."""
    TASKS.labels(**_base, task=task_name, state=state.lower()).inc()
