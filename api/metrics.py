"""Prometheus metrics, read from Postgres and Redis at scrape time (so every API replica
reports the same truth and nothing is lost on restart)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from api.deps import ApiResources
from embedq_core.db import psycopg_connection
from embedq_core.queueing import embed_queue, queue_depth, reembed_queue
from migrations.reembed.progress import list_migrations, progress

log = logging.getLogger(__name__)


class EmbedqCollector(Collector):
    """Jobs by status, queue depths and re-embedding progress."""

    def __init__(self, resources: ApiResources) -> None:
        self._resources = resources

    def collect(self) -> Iterator[Any]:
        jobs = GaugeMetricFamily("embedq_unfinished_jobs", "Jobs not finished", labels=["status"])
        depth = GaugeMetricFamily("embedq_queue_depth", "Messages waiting", labels=["queue"])
        rows = GaugeMetricFamily(
            "embedq_reembed_rows", "Rows of a re-embedding migration", labels=["migration", "state"]
        )
        rate = GaugeMetricFamily(
            "embedq_reembed_rows_per_second", "Recent rate", labels=["migration"]
        )
        eta = GaugeMetricFamily("embedq_reembed_eta_seconds", "Time left", labels=["migration"])
        cut_over = GaugeMetricFamily(
            "embedq_reembed_cut_over", "1 after cutover", labels=["migration"]
        )
        try:
            with self._resources.engine.connect() as conn:
                for status, count in conn.exec_driver_sql(
                    "SELECT status, count(*) FROM jobs WHERE finished_at IS NULL GROUP BY status"
                ):
                    jobs.add_metric([status], count)
                manifests = [r[0] for r in conn.exec_driver_sql("SELECT id FROM model_manifests")]
                raw = psycopg_connection(conn)
                for name in list_migrations(raw):
                    figures = progress(raw, name)
                    for state, value in (
                        ("total", figures.rows_total),
                        ("done", figures.rows_done),
                        ("pending", figures.rows_pending),
                    ):
                        rows.add_metric([name, state], value)
                    rate.add_metric([name], figures.rate_rows_per_s)
                    if figures.eta_s is not None:
                        eta.add_metric([name], figures.eta_s)
                    cut_over.add_metric([name], float(figures.cut_over))
            for manifest_id in manifests:
                for queue in (embed_queue(manifest_id), reembed_queue(manifest_id)):
                    depth.add_metric([queue], queue_depth(self._resources.redis, queue))
        except Exception as exc:  # a scrape during an outage reports what it has
            log.warning("metrics scrape incomplete: %s", exc)
        yield from (jobs, depth, rows, rate, eta, cut_over)
