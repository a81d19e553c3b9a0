"""Processing one batch: claim its pending items, embed, write vectors, mark items done."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from workers.context import WorkerContext
from workers.engine.pooling import FloatArray
from workers.job_state import (
    ClaimedBatch,
    ClaimedItem,
    claim_batch,
    finish_batch,
    record_batch_error,
    try_lock_batch,
    unlock_batch,
)
from workers.writer import write_vectors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOutcome:
    """What one delivery of a batch did."""

    done: int
    failed: int
    unchanged: int = 0
    skipped_reason: str | None = None


def process_batch(ctx: WorkerContext, job_id: str, batch_no: int) -> BatchOutcome:
    """Embed and store one batch; safe to run again, or twice at once, for the same batch."""
    conn = ctx.connection()
    if not try_lock_batch(conn, job_id, batch_no):
        # Another live worker holds it; if that worker dies its lock goes with its connection
        # and the reconciler sends the batch again.
        return BatchOutcome(0, 0, skipped_reason="batch is being processed by another worker")
    try:
        batch = claim_batch(conn, job_id, batch_no)
        if batch is None:
            return BatchOutcome(0, 0, skipped_reason="job not found")
        if not batch.items:
            return BatchOutcome(0, 0, skipped_reason="nothing pending (already done)")
        try:
            return _embed_and_store(ctx, conn, batch)
        except psycopg.OperationalError:
            raise  # transient: the caller retries the whole batch
        except Exception as exc:
            # Leave the items pending with the reason; the attempt counter ends the retries.
            with conn.transaction():
                record_batch_error(conn, batch, f"{type(exc).__name__}: {exc}")
            raise
    finally:
        if not conn.closed and not conn.broken:
            unlock_batch(conn, job_id, batch_no)


def _embed_and_store(
    ctx: WorkerContext, conn: psycopg.Connection[Any], batch: ClaimedBatch
) -> BatchOutcome:
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
        + (f"; last error: {item.last_error}" if item.last_error else "")
        for item in batch.items
        if item.attempts > max_attempts
    }
    candidates = [i for i in batch.items if i.external_id not in failures]
    unchanged = _unchanged_ids(conn, batch, candidates, model_id)
    live: list[ClaimedItem] = [i for i in candidates if i.external_id not in unchanged]
    result = ctx.embedder.embed([item.text for item in live])
    rows = [
        (item.external_id, item.text, item.metadata, item.content_hash, truncated)
        for item, truncated in zip(live, result.truncated, strict=True)
    ]
    # A batch that failed before is written item by item, so one poison item fails alone.
    isolate = any(item.last_error for item in live)
    with conn.transaction():
        if rows and not isolate:
            write_vectors(conn, batch.vector_table, model_id, batch.job_id, rows, result.vectors)
        elif rows:
            failures |= _write_isolated(conn, batch, model_id, rows, result.vectors)
        if unchanged:
            _refresh_unchanged(conn, batch, [i for i in candidates if i.external_id in unchanged])
        finish_batch(
            conn,
            batch,
            done_ids=[i.external_id for i in candidates if i.external_id not in failures],
            truncated_ids=[r[0] for r in rows if r[4] and r[0] not in failures],
            failures=failures,
            unchanged_ids=sorted(unchanged),
        )
    candidates = [i for i in candidates if i.external_id not in failures]
    log.info(
        "job %s batch %d: %d embedded, %d unchanged, %d failed",
        batch.job_id,
        batch.batch_no,
        len(candidates) - len(unchanged),
        len(unchanged),
        len(failures),
    )
    return BatchOutcome(len(candidates), len(failures), len(unchanged))


def _write_isolated(
    conn: psycopg.Connection[Any],
    batch: ClaimedBatch,
    model_id: str,
    rows: list[tuple[str, str, dict[str, Any], bytes, bool]],
    vectors: FloatArray,
) -> dict[str, str]:
    """Write each row under its own savepoint; returns the rows that failed, with why."""
    failures: dict[str, str] = {}
    for index, row in enumerate(rows):
        try:
            with conn.transaction():
                write_vectors(
                    conn,
                    batch.vector_table,
                    model_id,
                    batch.job_id,
                    [row],
                    vectors[index : index + 1],
                )
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            failures[row[0]] = f"{type(exc).__name__}: {exc}".strip()[:2000]
    return failures


def _unchanged_ids(
    conn: psycopg.Connection[Any],
    batch: ClaimedBatch,
    items: list[ClaimedItem],
    model_id: str,
) -> set[str]:
    """Ids whose stored vector already comes from this text and this model."""
    if not items:
        return set()
    rows = conn.execute(
        sql.SQL(
            "SELECT v.id FROM {} v JOIN unnest(%s::text[], %s::bytea[]) AS n(id, content_hash)"
            " ON v.id = n.id AND v.content_hash = n.content_hash WHERE v.manifest_id = %s"
        ).format(sql.Identifier(batch.vector_table)),
        ([i.external_id for i in items], [i.content_hash for i in items], model_id),
    ).fetchall()
    return {r[0] for r in rows}


def _refresh_unchanged(
    conn: psycopg.Connection[Any], batch: ClaimedBatch, items: list[ClaimedItem]
) -> None:
    """Same text, same model: keep the vector, take the new metadata."""
    conn.execute(
        sql.SQL(
            "UPDATE {} v SET metadata = n.metadata, job_id = %s, updated_at = now()"
            " FROM unnest(%s::text[], %s::jsonb[]) AS n(id, metadata) WHERE v.id = n.id"
        ).format(sql.Identifier(batch.vector_table)),
        (
            batch.job_id,
            [i.external_id for i in items],
            [Jsonb(i.metadata) for i in items],
        ),
    )
