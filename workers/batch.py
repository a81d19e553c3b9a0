"""Processing one batch: claim its pending items, embed, write vectors, mark items done."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from workers.context import WorkerContext
from workers.job_state import ClaimedItem, claim_batch, finish_batch
from workers.writer import write_vectors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOutcome:
    """What one delivery of a batch did."""

    done: int
    failed: int
    skipped_reason: str | None = None


def process_batch(ctx: WorkerContext, job_id: str, batch_no: int) -> BatchOutcome:
    """Embed and store one batch; safe to run again for the same batch."""
    conn = ctx.connection()
    batch = claim_batch(conn, job_id, batch_no)
    if batch is None:
        return BatchOutcome(0, 0, "job not found")
    if not batch.items:
        return BatchOutcome(0, 0, "nothing pending (already done)")
    model_id = ctx.embedder.manifest.manifest_id
    if batch.manifest_id != model_id:
        # Never embed with another model than the collection's: fail loudly, per item.
        reason = f"worker serves {model_id}, collection needs {batch.manifest_id}"
        with conn.transaction():
            finish_batch(conn, batch, [], [], {i.external_id: reason for i in batch.items})
        return BatchOutcome(0, len(batch.items))

    max_attempts = ctx.settings.max_task_attempts
    failures = {
        item.external_id: f"gave up after {item.attempts - 1} attempts"
        for item in batch.items
        if item.attempts > max_attempts
    }
    live: list[ClaimedItem] = [i for i in batch.items if i.external_id not in failures]
    result = ctx.embedder.embed([item.text for item in live])
    rows = [
        (item.external_id, item.text, item.metadata, item.content_hash, truncated)
        for item, truncated in zip(live, result.truncated, strict=True)
    ]
    with conn.transaction():
        if rows:
            write_vectors(conn, batch.vector_table, model_id, batch.job_id, rows, result.vectors)
        finish_batch(
            conn,
            batch,
            done_ids=[item.external_id for item in live],
            truncated_ids=[r[0] for r in rows if r[4]],
            failures=failures,
        )
    log.info("job %s batch %d: %d embedded, %d failed", job_id, batch_no, len(live), len(failures))
    return BatchOutcome(len(live), len(failures))
