"""The Prometheus series of one worker process, in one plain registry
(workers/telemetry/metrics.py records
into them, workers/telemetry/listener.py serves them). Every series carries the process's model
(manifest id), backend and device; `embedq_worker_info` carries them once more with the model's
precision, dimension and source, and how its pipeline runs."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

BASE_LABELS = ("model", "backend", "device")
INFO_MODEL_LABELS = ("precision", "dimension", "source")
INFO_PIPELINE_LABELS = ("engine_streams", "write_behind", "claim_ahead", "tokenise_ahead")
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
    "1 per worker process; its model, backend, device, the model's precision, dimension and "
    "source, and how its pipeline runs (engine streams; write behind, claim ahead and tokenise "
    "ahead as they take effect: true or false)",
    _labels(*INFO_MODEL_LABELS, *INFO_PIPELINE_LABELS),
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
PREEMPTED_RUNS = Counter(
    "embedq_worker_engine_preempted_runs",
    "Bulk engine turns cancelled so a live query could run at once (each runs again, halved)",
    _labels(),
    registry=REGISTRY,
)
PREEMPTED_SECONDS = Counter(
    "embedq_worker_engine_preempted_seconds",
    "Engine time lost to bulk turns cancelled for live queries",
    _labels(),
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
# Every kind ERRORS counts; each starts at 0 in a worker, so dashboards and alerts see a
# series (and a rate of 0) before the first error.
ERROR_KINDS = (
    "embed",
    "write",
    "gave_up",
    "wrong_model",
    "delivery",
    "db_transient",
    "query",
    "task",
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
