"""Entry point of a worker process: load the model once, register it, consume its queue."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy.exc import OperationalError
from tenacity import (
    before_sleep_log,
    retry,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from embedq_core.catalog import register_model_dir
from embedq_core.db import make_engine
from embedq_core.manifest import ModelManifest
from embedq_core.queueing import embed_queue, reembed_queue
from embedq_core.settings import Settings
from embedq_core.startup_wait import wait_for_broker, wait_for_database, wait_for_model
from migrations.schema_upgrade import head_revision
from workers.background.index_maintenance import IndexMaintenance
from workers.background.presence import ConsumerIdle
from workers.background.query_server import QueryServer
from workers.background.reconciler import Reconciler
from workers.celery_app import build_worker_app
from workers.context import WorkerContext
from workers.telemetry import listener as metrics_listener
from workers.telemetry import metrics

log = logging.getLogger(__name__)


@retry(
    retry=retry_if_exception_type(OperationalError),
    wait=wait_exponential(multiplier=0.5, max=10),
    stop=stop_after_delay(120),
    before_sleep=before_sleep_log(log, logging.WARNING),
    reraise=True,
)
def _register(settings: Settings, model_dir: Path) -> None:
    engine = make_engine(settings.require_database_url(), pool_size=1)
    try:
        with engine.begin() as conn:
            register_model_dir(conn, model_dir)
    finally:
        engine.dispose()


def run_worker(settings: Settings) -> None:
    """Load and warm the model, record its manifest, then consume the model's queue (solo pool:
    one process, one model in memory, one batch at a time; run one process per GPU)."""
    if settings.model_dir is not None:
        wait_for_model(settings, settings.model_dir)
        if ModelManifest.read(settings.model_dir).is_reranker:
            from workers.rerank_worker import run_reranker_worker

            run_reranker_worker(settings, _register)
            return
    # The model first: a GPU worker without a GPU exits at once, before any wait on the network.
    ctx = WorkerContext.load(settings)
    wait_for_database(settings, schema_head=head_revision())
    wait_for_broker(settings)
    # Labelled with the loaded model; /healthz says 503 until Celery reports the worker ready.
    metrics_server = metrics_listener.start(settings, ctx)
    manifest = ctx.embedder.manifest
    assert settings.model_dir is not None  # WorkerContext.load checked it
    _register(settings, settings.model_dir)
    # Live jobs and re-embedding migrations each get a queue; migration steps yield to jobs.
    queues = f"{embed_queue(manifest.manifest_id)},{reembed_queue(manifest.manifest_id)}"
    log.info("worker ready: model %s, queues %s", manifest.manifest_id, queues)
    app = build_worker_app(ctx)
    consumer = ConsumerIdle()
    consumer.connect()
    reconciler = Reconciler(settings, ctx.worker_name, manifest.manifest_id, consumer)
    reconciler.start()
    queries = QueryServer(settings, ctx.embedder, ctx.worker_name)
    queries.start()
    # HNSW builds of re-embedding migrations run here, beside the consumer, not in a task.
    indexes = IndexMaintenance(settings)
    indexes.start()
    try:
        app.worker_main(
            [
                "worker",
                "--pool=solo",
                "--concurrency=1",
                f"--queues={queues}",
                f"--loglevel={settings.log_level}",
                f"--hostname=embedq-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        metrics.set_ready(False)
        indexes.stop()
        queries.stop()
        reconciler.stop()
        ctx.close()
        if metrics_server is not None:
            metrics_server.stop()
