"""The worker's Celery app: the shared configuration plus the tasks bound to a loaded model."""

from __future__ import annotations

import logging

from celery import Celery

from embedq_core.queueing import EMBED_BATCH_TASK, make_celery
from workers.batch import process_batch
from workers.context import WorkerContext

log = logging.getLogger(__name__)


def build_worker_app(ctx: WorkerContext) -> Celery:
    """A Celery app whose tasks use the already-loaded model in ctx."""
    app = make_celery(ctx.settings)

    @app.task(name=EMBED_BATCH_TASK)  # type: ignore[untyped-decorator]
    def embed_batch(job_id: str, batch_no: int) -> dict[str, int | str | None]:
        outcome = process_batch(ctx, job_id, batch_no)
        return {"done": outcome.done, "failed": outcome.failed, "skipped": outcome.skipped_reason}

    return app
