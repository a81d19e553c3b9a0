"""The worker's Celery app: the shared configuration plus the tasks bound to a loaded model."""

from __future__ import annotations

import logging

import psycopg
from celery import Celery
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from embedq_core.queueing import EMBED_BATCH_TASK, make_celery
from workers.batch import BatchOutcome, process_batch
from workers.context import WorkerContext

log = logging.getLogger(__name__)


def build_worker_app(ctx: WorkerContext) -> Celery:
    """A Celery app whose tasks use the already-loaded model in ctx."""
    app = make_celery(ctx.settings)

    @app.task(name=EMBED_BATCH_TASK)  # type: ignore[untyped-decorator]
    def embed_batch(job_id: str, batch_no: int) -> dict[str, int | str | None]:
        outcome = process_with_db_retry(ctx, job_id, batch_no)
        return {"done": outcome.done, "failed": outcome.failed, "skipped": outcome.skipped_reason}

    return app


def process_with_db_retry(ctx: WorkerContext, job_id: str, batch_no: int) -> BatchOutcome:
    """Process a batch, retrying with backoff while Postgres is unreachable (the whole batch is
    one transaction, so a retry starts clean)."""
    retrying = Retrying(
        retry=retry_if_exception_type(psycopg.OperationalError),
        wait=wait_exponential(multiplier=0.5, max=5),
        stop=stop_after_delay(ctx.settings.db_retry_timeout_s),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
    outcome: BatchOutcome = retrying(process_batch, ctx, job_id, batch_no)
    return outcome
