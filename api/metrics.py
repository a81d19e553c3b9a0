"""Prometheus metrics of the API process, served at /metrics.

- Requests (api/request_metrics.py) are counted as they pass.
- Unfinished jobs, queue depths, which models have live workers and re-embedding progress are
  read from Postgres and Redis by one refresh at most every EMBEDQ_METRICS_CACHE_S, however many
  scrapes or scrapers there are. A scrape during a refresh waits for it (at most
  REFRESH_WAIT_S) or serves the figures before it, so scrapes hold one pooled connection at most.
- The refresh reads embedq's own tables (jobs through its unfinished-jobs index,
  model_manifests, reembed_migrations, the latest rows of reembed_chunks by primary key), Redis
  list lengths and pg_stat_progress_create_index. Of a user's table it reads only a vectorizer's
  two partial indexes (its lag: the first entry of the queued index; its pending rows, counted up
  to a cap): never a collection's vectors_<name>, never a scan of a table being re-embedded.
  Migration figures are what each migration records as it goes (rows_total counted at start
  and at each phase change; rows_embedded and chunks per chunk), not counts of the table:
  `embedq reembed status --exact` counts it when you ask.
- With EMBEDQ_METRICS_TOKEN set, /metrics answers only `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine

from api.deps import ApiResources
from api.errors import field_error
from api.request_metrics import HttpMetrics, RequestMetrics
from embedq_core.db import psycopg_connection
from embedq_core.metrics_auth import metrics_authorized
from embedq_core.query_protocol import query_queue, serving_key
from embedq_core.queueing import embed_queue, queue_depth, reembed_queue
from embedq_core.tables import FINISHED_STATUSES, JOB_STATUSES
from migrations.reembed import row_failures
from migrations.reembed.progress import PENDING_COUNT_CAP, lag_s, pending_capped
from migrations.reembed.state import load

log = logging.getLogger(__name__)

REFRESH_WAIT_S = 2.0
STATEMENT_TIMEOUT_MS = 5000
# Rate of a migration: rows of its chunks that ended in this window (as `reembed status`).
RATE_WINDOW_S = 120
RATE_CHUNKS = 64  # the newest chunks read per migration (primary key, backwards)
PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_$]*$")


def _families() -> dict[str, Metric]:
    """The refreshed families, empty."""
    return {
        "jobs": GaugeMetricFamily(
            "embedq_unfinished_jobs", "Jobs not finished, by status", labels=["status"]
        ),
        "depth": GaugeMetricFamily(
            "embedq_queue_depth",
            "Messages waiting per model: embed (job batches), reembed (migration steps), "
            "query (live queries)",
            labels=["model", "queue"],
        ),
        "serving": GaugeMetricFamily(
            "embedq_model_serving",
            "1 when some worker of the model announced itself for live queries lately",
            labels=["model"],
        ),
        "rows": GaugeMetricFamily(
            "embedq_reembed_rows",
            "Rows of a re-embedding migration as it records them: total (counted at start), "
            "embedded (written so far; catch-up rewrites count again)",
            labels=["migration", "state"],
        ),
        "chunks": GaugeMetricFamily(
            "embedq_reembed_chunks_done", "Chunks a migration has committed", labels=["migration"]
        ),
        "rate": GaugeMetricFamily(
            "embedq_reembed_rows_per_second",
            f"Rows per second over the chunks of the last {RATE_WINDOW_S} s",
            labels=["migration"],
        ),
        "eta": GaugeMetricFamily(
            "embedq_reembed_eta_seconds",
            "Estimated time left in the backfill (keyset phase only)",
            labels=["migration"],
        ),
        "cut_over": GaugeMetricFamily(
            "embedq_reembed_cut_over", "1 after cutover", labels=["migration"]
        ),
        "info": GaugeMetricFamily(
            "embedq_reembed_info",
            "1 per migration, with its table, status and phase",
            labels=["migration", "table", "status", "phase"],
        ),
        "index": GaugeMetricFamily(
            "embedq_reembed_index_done_fraction",
            "Share of the HNSW build done (while one runs)",
            labels=["migration"],
        ),
        "lag": GaugeMetricFamily(
            "embedq_vectorizer_lag_seconds",
            "How long the oldest row waiting for its vector has waited (0: none waits)",
            labels=["vectorizer"],
        ),
        "pending": GaugeMetricFamily(
            "embedq_vectorizer_pending_rows",
            f"Rows with text waiting for their vector (counted up to {PENDING_COUNT_CAP:,})",
            labels=["vectorizer"],
        ),
        "failed_rows": GaugeMetricFamily(
            "embedq_vectorizer_failed_rows",
            "Rows the table refused to update: retrying (with backoff) or parked",
            labels=["vectorizer", "state"],
        ),
    }


def _display(schema: str, table: str) -> str:
    """schema.table as written in SQL, quoted where needed."""
    return ".".join(
        n if PLAIN_NAME.match(n) else '"' + n.replace('"', '""') + '"' for n in (schema, table)
    )


class StoreMetrics(Collector):
    """The figures that live in Postgres and Redis, refreshed at most every cache_s."""

    def __init__(self, engine: Engine, redis: Any, cache_s: float, with_names: bool) -> None:
        """with_names: report re-embedding migrations, whose labels name the user's tables
        (only behind the metrics token)."""
        self._engine = engine
        self._with_names = with_names
        self._redis = redis
        self._cache_s = cache_s
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self._manifests: list[str] = []
        self._refreshed_at = float("-inf")
        self._refreshed_wall = 0.0
        self._refresh_s = 0.0
        self._errors = 0

    def describe(self) -> Iterable[Metric]:
        """The families' names, without reading anything."""
        return [*_families().values(), *self._meta()]

    def collect(self) -> Iterator[Metric]:
        """The cached figures, refreshed first when older than cache_s."""
        if self._lock.acquire(timeout=REFRESH_WAIT_S):
            try:
                if time.monotonic() - self._refreshed_at >= self._cache_s:
                    self._refresh()
            finally:
                self._lock.release()
        yield from self._families
        yield from self._meta()

    def _meta(self) -> list[Metric]:
        seconds = GaugeMetricFamily(
            "embedq_metrics_refresh_seconds", "How long the last refresh of these figures took"
        )
        seconds.add_metric([], self._refresh_s)
        at = GaugeMetricFamily(
            "embedq_metrics_refreshed_timestamp_seconds", "When these figures were last read"
        )
        at.add_metric([], self._refreshed_wall)
        errors = CounterMetricFamily(
            "embedq_metrics_refresh_errors", "Refreshes that could not read Postgres or Redis"
        )
        errors.add_metric([], self._errors)
        return [seconds, at, errors]

    def _refresh(self) -> None:
        started = time.perf_counter()
        families = _families()
        try:
            with self._engine.connect() as conn:
                # A refresh never holds its connection long, even on a struggling server.
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT_MS}ms'")
                self._manifests = [
                    r[0] for r in conn.exec_driver_sql("SELECT id FROM model_manifests ORDER BY id")
                ]
                self._read_jobs(conn, families)
                if self._with_names:
                    self._read_migrations(conn, families)
        except Exception as exc:  # an outage: report what could be read, and that it failed
            log.warning("metrics: Postgres figures unavailable: %s", exc)
            self._errors += 1
        try:
            self._read_queues(families)
        except Exception as exc:
            log.warning("metrics: Redis figures unavailable: %s", exc)
            self._errors += 1
        self._families = list(families.values())
        self._refreshed_at = time.monotonic()
        self._refreshed_wall = time.time()
        self._refresh_s = time.perf_counter() - started

    def _read_jobs(self, conn: Connection, families: dict[str, Metric]) -> None:
        jobs = families["jobs"]
        assert isinstance(jobs, GaugeMetricFamily)
        counts = dict.fromkeys((s for s in JOB_STATUSES if s not in FINISHED_STATUSES), 0)
        for status, count in conn.exec_driver_sql(
            "SELECT status, count(*) FROM jobs WHERE finished_at IS NULL GROUP BY status"
        ):
            counts[status] = count
        # Every unfinished status, 0 included: an idle system reads 0, not "no data".
        for status, count in counts.items():
            jobs.add_metric([status], count)

    def _read_migrations(self, conn: Connection, f: dict[str, Metric]) -> None:
        building = {
            (r[0], r[1]): r[2]
            for r in conn.exec_driver_sql(
                "SELECT n.nspname, c.relname, CASE WHEN p.blocks_total > 0"
                " THEN p.blocks_done::float8 / p.blocks_total END"
                " FROM pg_stat_progress_create_index p JOIN pg_class c ON c.oid = p.relid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
            )
        }
        migrations = conn.exec_driver_sql(
            "SELECT name, table_schema, table_name, status, phase, cut_over, rows_total,"
            " rows_embedded, chunks_done FROM reembed_migrations ORDER BY name"
        ).fetchall()
        for name, schema, table, status, phase, cut_over, total, embedded, chunks in migrations:
            _add(f["info"], [name, _display(schema, table), status, phase], 1)
            _add(f["rows"], [name, "total"], total)
            _add(f["rows"], [name, "embedded"], embedded)
            _add(f["chunks"], [name], chunks)
            _add(f["cut_over"], [name], float(cut_over))
            rate = _rate(conn, name)
            _add(f["rate"], [name], rate)
            if phase == "keyset" and rate > 0:
                _add(f["eta"], [name], max(total - embedded, 0) / rate)
            if building.get((schema, table)) is not None:
                _add(f["index"], [name], building[(schema, table)])
        self._read_vectorizers(conn, f)

    def _read_vectorizers(self, conn: Connection, f: dict[str, Metric]) -> None:
        # The only reads of a user's table: the first entry of a vectorizer's queued index
        # (the lag) and its pending-rows index, counted up to a cap.
        driver = psycopg_connection(conn)
        names = [r[0] for r in conn.exec_driver_sql(
            "SELECT name FROM reembed_migrations WHERE kind = 'vectorizer' ORDER BY name"
        )]  # fmt: skip
        for name in names:
            try:
                with driver.transaction():  # a savepoint: one unreadable table spoils nothing
                    m = load(driver, name)
                    lag, pending = lag_s(driver, m) or 0.0, pending_capped(driver, m)
            except psycopg.Error as exc:  # e.g. the API's role may not read that table
                log.warning("metrics: vectorizer %s: %s", name, exc)
                continue
            _add(f["lag"], [name], lag)
            _add(f["pending"], [name], pending)
            retrying, parked = row_failures.counts(driver, name)
            _add(f["failed_rows"], [name, "retrying"], retrying)
            _add(f["failed_rows"], [name, "parked"], parked)

    def _read_queues(self, f: dict[str, Metric]) -> None:
        for manifest_id in self._manifests:
            for kind, queue in (
                ("embed", embed_queue(manifest_id)),
                ("reembed", reembed_queue(manifest_id)),
            ):
                _add(f["depth"], [manifest_id, kind], queue_depth(self._redis, queue))
            with self._redis.pipeline() as pipe:
                pipe.llen(query_queue(manifest_id))
                pipe.exists(serving_key(manifest_id))
                waiting, serving = pipe.execute()
            _add(f["depth"], [manifest_id, "query"], int(waiting))
            _add(f["serving"], [manifest_id], 1.0 if serving else 0.0)


def _add(family: Metric, labels: list[str], value: float) -> None:
    assert isinstance(family, GaugeMetricFamily)
    family.add_metric(labels, value)


def _rate(conn: Connection, name: str) -> float:
    """Rows per second of the migration's chunks that ended in the window, as `reembed
    status` computes it (over one chunk, its own time; over several, the wall time between the
    first and the last end)."""
    rows = conn.exec_driver_sql(
        "SELECT rows_read, seconds, finished_at FROM reembed_chunks"
        " WHERE migration = %(name)s AND finished_at > now() - make_interval(secs => %(window)s)"
        " ORDER BY chunk_no DESC LIMIT %(limit)s",
        {"name": name, "window": RATE_WINDOW_S, "limit": RATE_CHUNKS},
    ).fetchall()
    if not rows:
        return 0.0
    read = float(sum(r[0] for r in rows))
    span_s = float((max(r[2] for r in rows) - min(r[2] for r in rows)).total_seconds())
    busy_s = float(sum(r[1] for r in rows))
    return read / max(span_s if span_s > 0 else busy_s, 1e-3)


def install_metrics(app: FastAPI, resources: ApiResources) -> CollectorRegistry:
    """Count requests (add this last: the middleware must be outermost) and serve /metrics."""
    settings = resources.settings
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    http = HttpMetrics(registry)
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    if token is None:
        log.warning(
            "EMBEDQ_METRICS_TOKEN is not set: /metrics is open and leaves out the re-embedding "
            "migrations (their labels name your tables)"
        )
    registry.register(
        StoreMetrics(
            resources.engine,
            resources.redis,
            settings.metrics_cache_s,
            with_names=token is not None,
        )
    )

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        """Prometheus exposition; `Authorization: Bearer <EMBEDQ_METRICS_TOKEN>` when set."""
        if not metrics_authorized(request.headers.get("authorization", ""), token):
            raise field_error(
                401,
                ["authorization"],
                "missing or wrong metrics token (Authorization: Bearer <token>)",
                "unauthorized",
                source="header",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestMetrics, metrics=http, routes=lambda: app.router.routes)
    return registry
