"""The worker's transitions: claim a batch, count an attempt, record failures, finish a batch.

Every transition is guarded by the item's status, so a redelivered batch changes nothing twice.

An attempt is counted when the worker starts embedding a batch alone (count_attempt, committed
before the engine runs), not when it claims it: a batch claimed ahead of one that crashes the
worker never ran, and spends nothing. Small batches embedded together on their first claim
(workers/delivery/coalesce.py) count no attempt either, since a crash cannot say whose text
caused it; every later claim of such a batch embeds it alone, so a poison text spends its own
attempts until it fails, and the batches beside it complete.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from embedq_core.catalog import Chunking, chunking_of
from embedq_core.lifecycle.delivery import record_claimed, record_finished


@dataclass(frozen=True)
class ClaimedItem:
    """A pending item of a batch, with the attempts it has spent before this delivery."""

    external_id: str
    text: str
    metadata: dict[str, Any]
    content_hash: bytes
    attempts: int
    last_error: str | None
    # Submission order (job_items.seq): the vector row only takes an item at least this new.
    seq: int


@dataclass(frozen=True)
class ClaimedBatch:
    """The pending items of one batch and where their vectors go."""

    job_id: uuid.UUID
    batch_no: int
    collection: str
    manifest_id: str
    vector_table: str
    items: list[ClaimedItem]
    # Seconds from the batch's last send to this claim (None: unknown).
    queued_s: float | None = None
    # A worker claimed the batch before this claim (a re-send, or its message after a
    # coalesced try): it is embedded alone.
    claimed_before: bool = False
    # A chunking collection's batch: each item is a document, stored as token windows.
    chunking: Chunking | None = None


# Where a job's vectors go.
_JOB_TARGET_SQL = """
SELECT j.collection, j.manifest_id, c.vector_table, c.chunk_max_tokens, c.chunk_overlap_tokens
FROM jobs j JOIN collections c ON c.name = j.collection
WHERE j.id = %(job_id)s
"""
_START_JOB_SQL = """
WITH started AS (
    UPDATE jobs SET status = 'running', updated_at = now()
    WHERE id = %(job_id)s AND status = 'queued'
)
"""


def claim_batch(
    conn: psycopg.Connection[Any],
    job_id: str,
    batch_no: int,
    worker: str,
    delivered: bool,
    send_no: int | None = None,
) -> ClaimedBatch | None:
    """Record the claim of the batch's pending items (`delivered`: on delivery of the batch's
    own message, send number `send_no`) and return them (committed at once, so a worker killed
    mid-batch leaves the claim recorded for the reconciler). None if the job is unknown. A
    batch with nothing pending (its message arrived after another delivery finished it) is only
    read: no row is written. No attempt is counted here: count_attempt does, when the engine
    starts on it."""
    claim_record = None
    with conn.transaction() as claim:
        rows = conn.execute(
            """
            SELECT external_id, text, metadata, content_hash, attempts, item_index, error,
                   coalesce(seq, 0)
            FROM job_items WHERE job_id = %s AND batch_no = %s AND status = 'pending'
            """,
            (job_id, batch_no),
        ).fetchall()
        # Only a queued job's row is updated (started): once it runs, every batch's write
        # transaction updates that row last, and a claim that updated it too would wait on the
        # commit of the batch being written behind the engine. A claim of nothing only reads.
        start = _START_JOB_SQL if rows else ""
        job = conn.execute(start + _JOB_TARGET_SQL, {"job_id": job_id}).fetchone()
        if rows:
            if job is None:
                raise psycopg.Rollback(claim)  # no such job: nothing is claimed
            claim_record = record_claimed(conn, job_id, batch_no, worker, delivered, send_no)
    if job is None:
        return None
    rows.sort(key=lambda r: r[5])
    items = [ClaimedItem(r[0], r[1], r[2], bytes(r[3]), r[4], r[6], r[7]) for r in rows]
    return ClaimedBatch(
        uuid.UUID(job_id),
        batch_no,
        job[0],
        job[1],
        job[2],
        items,
        claim_record.queued_s if claim_record else None,
        claim_record.claimed_before if claim_record else False,
        chunking_of(job[3], job[4]),
    )


def count_attempt(conn: psycopg.Connection[Any], batch: ClaimedBatch) -> None:
    """The worker starts embedding the batch alone: one attempt on its pending items, committed
    before the engine runs, so a text that kills the worker still spends it."""
    with conn.transaction():
        conn.execute(
            "UPDATE job_items SET attempts = attempts + 1, updated_at = now()"
            " WHERE job_id = %s AND batch_no = %s AND status = 'pending'",
            (batch.job_id, batch.batch_no),
        )


# A batch being worked on holds a session-level advisory lock keyed by (job, batch).
LOCK_BATCH_SQL = "SELECT pg_try_advisory_lock(hashtext(%s), %s)"
UNLOCK_BATCH_SQL = "SELECT pg_advisory_unlock(hashtext(%s), %s)"


def try_lock_batch(conn: psycopg.Connection[Any], job_id: str, batch_no: int) -> bool:
    """Take the batch's session lock; it dies with the connection, so a killed worker frees it."""
    row = conn.execute(LOCK_BATCH_SQL, (job_id, batch_no)).fetchone()
    return bool(row and row[0])


def unlock_batch(conn: psycopg.Connection[Any], job_id: str, batch_no: int) -> None:
    """Release the batch's session lock."""
    conn.execute(UNLOCK_BATCH_SQL, (job_id, batch_no))


def pending_ids(conn: psycopg.Connection[Any], batch: ClaimedBatch) -> set[str]:
    """The batch's items still pending now (another worker may have finished some while this
    one was reconnecting without the batch's lock)."""
    rows = conn.execute(
        "SELECT external_id FROM job_items"
        " WHERE job_id = %s AND batch_no = %s AND status = 'pending'",
        (batch.job_id, batch.batch_no),
    ).fetchall()
    return {r[0] for r in rows}


def refund_attempt(conn: psycopg.Connection[Any], batch: ClaimedBatch, max_refunds: int) -> bool:
    """Give back this delivery's attempt (the worker's engine, not the batch, seemed at fault),
    unless the batch has had max_refunds already: a text that breaks the engine it runs on
    would otherwise be retried forever. Whether it was given back."""
    with conn.transaction():
        refunded = conn.execute(
            "UPDATE job_batches SET engine_refunds = engine_refunds + 1"
            " WHERE job_id = %s AND batch_no = %s AND engine_refunds < %s",
            (batch.job_id, batch.batch_no, max_refunds),
        ).rowcount
        if refunded:
            conn.execute(
                "UPDATE job_items SET attempts = greatest(attempts - 1, 0), updated_at = now()"
                " WHERE job_id = %s AND batch_no = %s AND status = 'pending'",
                (batch.job_id, batch.batch_no),
            )
    return bool(refunded)


def record_batch_error(conn: psycopg.Connection[Any], batch: ClaimedBatch, error: str) -> None:
    """Note the last error on the batch's pending items; they stay pending for a retry."""
    conn.execute(
        "UPDATE job_items SET error = %s, updated_at = now()"
        " WHERE job_id = %s AND batch_no = %s AND status = 'pending'",
        (error[:2000], batch.job_id, batch.batch_no),
    )


def finish_batch(
    conn: psycopg.Connection[Any],
    batch: ClaimedBatch,
    done_ids: list[str],
    truncated_ids: list[str],
    failures: dict[str, str],
    unchanged_ids: list[str] | None = None,
    chunk_counts: dict[str, int] | None = None,
) -> None:
    """Mark items done or failed, close the batch's delivery record if nothing is left pending,
    and roll the counts into the job, in the caller's transaction. `chunk_counts`: a chunking
    batch's chunks written per document (missing: none, e.g. unchanged or superseded).

    Only items still pending change, and the job counters move by exactly that many, so
    running this twice for the same batch is harmless.
    """
    counts = chunk_counts or {}
    finished = conn.execute(
        """
        UPDATE job_items i SET status = 'done', truncated = i.external_id = ANY(%s),
                               unchanged = i.external_id = ANY(%s), error = NULL,
                               chunks = CASE WHEN %s THEN d.chunks END, updated_at = now()
        FROM unnest(%s::text[], %s::int[]) AS d(external_id, chunks)
        WHERE i.job_id = %s AND i.batch_no = %s AND i.status = 'pending'
          AND i.external_id = d.external_id
        RETURNING d.chunks
        """,
        (
            truncated_ids,
            unchanged_ids or [],
            chunk_counts is not None,
            done_ids,
            [counts.get(i, 0) for i in done_ids],
            batch.job_id,
            batch.batch_no,
        ),
    ).fetchall()
    done = len(finished)
    chunks = sum(r[0] for r in finished)
    failed = 0
    if failures:
        failed = conn.execute(
            """
            UPDATE job_items i SET status = 'failed', error = f.error, updated_at = now()
            FROM unnest(%s::text[], %s::text[]) AS f(external_id, error)
            WHERE i.job_id = %s AND i.batch_no = %s AND i.status = 'pending'
              AND i.external_id = f.external_id
            """,
            (list(failures), list(failures.values()), batch.job_id, batch.batch_no),
        ).rowcount
    record_finished(conn, batch.job_id, batch.batch_no)
    # One statement, so concurrent batches of the same job serialise on the row lock and the
    # last one to finish sees the full counts.
    conn.execute(
        """
        UPDATE jobs SET
            done = done + %(done)s,
            failed = failed + %(failed)s,
            chunks = chunks + %(chunks)s,
            status = CASE
                WHEN done + %(done)s + failed + %(failed)s < total THEN 'running'
                WHEN done + %(done)s = 0 THEN 'failed'
                WHEN failed + %(failed)s > 0 THEN 'completed_with_errors'
                ELSE 'completed' END,
            finished_at = CASE WHEN done + %(done)s + failed + %(failed)s >= total
                               THEN now() END,
            updated_at = now()
        WHERE id = %(job_id)s
        """,
        {"done": done, "failed": failed, "chunks": chunks, "job_id": batch.job_id},
    )
