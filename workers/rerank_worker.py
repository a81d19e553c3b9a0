"""Entry point of a reranker worker: a cross-encoder answers live rerank requests only (there
is no bulk queue: no collection stores a reranker's output), beside its metrics listener."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from embedq_core.settings import Settings
from embedq_core.startup_wait import wait_for_broker, wait_for_database
from migrations.schema_upgrade import head_revision
from workers.background.query_server import QueryServer
from workers.engine import EngineConfig, Reranker
from workers.telemetry import listener as metrics_listener
from workers.telemetry import metrics

log = logging.getLogger(__name__)
NO_PIPELINE = {
    "engine_streams": "1",
    "write_behind": "false",
    "claim_ahead": "false",
    "tokenise_ahead": "false",
}


def run_reranker_worker(settings: Settings, register: Callable[[Settings, Path], None]) -> None:
    """Load and warm the reranker, record its manifest, answer rerank requests until SIGTERM
    or SIGINT. `register(settings, model_dir)` records the manifest (workers/main.py's)."""
    assert settings.model_dir is not None
    reranker = Reranker.from_model_dir(settings.model_dir, EngineConfig.from_settings(settings))
    reranker.warm_up()
    wait_for_database(settings, schema_head=head_revision())
    wait_for_broker(settings)
    metrics.configure(reranker.manifest, reranker.backend, NO_PIPELINE)
    reranker.observer = metrics.EngineMetrics()
    listener = metrics_listener.serve(settings)
    register(settings, settings.model_dir)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    queries = QueryServer(settings, reranker, f"{socket.gethostname()}:{os.getpid()}")
    queries.start()
    metrics.set_ready(True)
    # "ready." as Celery's consumer says it: what supervisors and the tests wait for.
    log.info("reranker %s serving live rerank requests: ready.", reranker.manifest.manifest_id)
    try:
        stop.wait()
    finally:
        metrics.set_ready(False)
        queries.stop()
        if listener is not None:
            listener.stop()
