"""The worker's Celery app: the shared configuration plus the tasks bound to a loaded model."""

from __future__ import annotations

import logging

from celery import Celery, Task
from celery.exceptions import Reject

from embedq_core.queueing import (
    EMBED_BATCH_TASK,
    REEMBED_STEP_TASK,
    SEND_NO_HEADER,
    embed_queue,
    make_celery,
    queue_depth,
    reembed_queue,
)
from migrations.reembed.backfill import StepOptions, run_step, step_is_current
from workers.background.watchdog import time_limit
from workers.context import WorkerContext
from workers.delivery.db import with_db_retry
from workers.delivery.run import ClaimNotRecorded, process_batch
from workers.reembed_source import EmbedderSource
from workers.telemetry import metrics

log = logging.getLogger(__name__)

# A re-embedding step waits this long when live jobs are queued for the same model.
YIELD_TO_LIVE_S = 1.0


def build_worker_app(ctx: WorkerContext) -> Celery:
    """A Celery app whose tasks use the already-loaded model in ctx."""
    app = make_celery(ctx.settings)
    manifest_id = ctx.embedder.manifest.manifest_id
    source = EmbedderSource(ctx.embedder)
    step_options = StepOptions.from_settings(ctx.settings)

    @app.task(name=EMBED_BATCH_TASK, bind=True)  # type: ignore[untyped-decorator]
    def embed_batch(self: Task, job_id: str, batch_no: int) -> dict[str, int | str | bool | None]:
        send_no = self.request.get(SEND_NO_HEADER)
        # Celery's own time limits are not enforced by the solo pool: see
        # workers/background/watchdog.py.
        try:
            with time_limit(ctx.settings.task_time_limit_s, f"job {job_id} batch {batch_no}"):
                outcome = process_batch(
                    ctx, job_id, batch_no, send_no if isinstance(send_no, int) else None
                )
        except ClaimNotRecorded as exc:
            log.warning("%s; Postgres unreachable before the claim: message back to the queue", exc)
            metrics.retry("claim_requeued")
            raise Reject(str(exc), requeue=True) from exc
        return {
            "done": outcome.done,
            "failed": outcome.failed,
            "skipped": outcome.skipped_reason,
            "written_behind": outcome.written_behind,
        }

    @app.task(name=REEMBED_STEP_TASK)  # type: ignore[untyped-decorator]
    def reembed_step(name: str, token: str) -> str:
        def resend(countdown_s: float) -> None:
            app.send_task(
                REEMBED_STEP_TASK,
                args=[name, token],
                queue=reembed_queue(manifest_id),
                countdown=countdown_s or None,
            )

        if queue_depth(ctx.redis(), embed_queue(manifest_id)) > 0:
            # A stale chain (the reconciler started a newer one) ends here rather than yielding
            # on, so chains never multiply.
            current = with_db_retry(
                ctx.settings, lambda: step_is_current(ctx.connection(), name, token)
            )
            if not current:
                return "stale or stopped: chain ended"
            resend(YIELD_TO_LIVE_S)  # live jobs first: this chunk waits its turn
            return "yielded to live jobs"
        result = with_db_retry(
            ctx.settings,
            lambda: run_step(ctx.connection(), source, name, token, step_options),
        )
        if result.next_delay_s is not None:
            resend(result.next_delay_s)
        return f"{result.outcome} ({result.phase}): {result.rows_written}/{result.rows_read} rows"

    return app
