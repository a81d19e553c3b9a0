"""Processing one batch: claim its pending items, embed, write vectors, mark items done.

One delivery is one claim, and one attempt. Transient database errors (connection loss,
failover, deadlock, serialization failure) run the failed transaction again with the claim and
the vectors already computed: they spend no attempt. A text the engine cannot embed fails
alone. A write error fails the delivery with its reason on the items; the reconciler sends the
batch again and that delivery writes item by item, so a poison item fails alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from embedq_core.batch_delivery import date_claim
from workers import engine_health, metrics
from workers.batch_lock import BatchBusy, BatchLock
from workers.context import WorkerContext
from workers.db_retry import is_transient
from workers.db_session import DbSession
from workers.embed_isolation import Embedded, TextEmbedder, embed_isolating
from workers.engine.pooling import FloatArray
from workers.job_state import (
    ClaimedBatch,
    ClaimedItem,
    claim_batch,
    finish_batch,
    pending_ids,
    record_batch_error,
    refund_attempt,
)
from workers.metrics import BatchTimer
from workers.watchdog import time_limit
from workers.write_plan import Action, decide
from workers.writer import VectorRow, read_stored, refresh_unchanged, write_vectors

log = logging.getLogger(__name__)


class ClaimNotRecorded(Exception):
    """Postgres stayed unreachable through db_retry_timeout_s before this delivery's claim was
    recorded. Postgres then knows nothing of the delivery, so its message must go back to the
    queue: acknowledged, the batch would wait for the unclaimed-send backstop (an hour)."""


@dataclass(frozen=True)
class BatchOutcome:
    """What one delivery of a batch did. `done` counts unchanged and superseded items too;
    `written_behind`: the write was handed to the writer thread, which ends the batch."""

    done: int
    failed: int
    unchanged: int = 0
    superseded: int = 0
    skipped_reason: str | None = None
    written_behind: bool = False


@dataclass(frozen=True)
class EmbeddedBatch:
    """A claimed batch with its vectors computed, ready to be written."""

    batch: ClaimedBatch
    candidates: list[ClaimedItem]
    gave_up: dict[str, str]
    embedded: Embedded
    model_id: str


def process_batch(ctx: WorkerContext, job_id: str, batch_no: int) -> BatchOutcome:
    """Claim and embed one batch, then write it: behind the engine when write-behind is on (the
    writer thread then ends the batch), in line otherwise. Safe to run again, or twice at once,
    for the same batch."""
    lane = ctx.writes.free_lane()
    if lane is None:
        # Both lanes hold batches still being written. Date a claim first: this message was
        # fetched after the last one was acknowledged, and if the worker dies while waiting,
        # the reconciler must find the batch by Postgres's grace rule, not an hour later.
        _date_claim(ctx.connection, job_id, batch_no)
        lane = ctx.writes.lane()
    lock = BatchLock(ctx.settings, lane, job_id, batch_no)
    timer = metrics.start_batch()
    handed_over = False
    try:
        with timer.stage("claim"):
            try:
                batch = lock.run(lambda conn: claim_batch(conn, job_id, batch_no, ctx.worker_name))
            except Exception as exc:
                if is_transient(exc):  # lock.run retried it until db_retry_timeout_s ran out
                    raise ClaimNotRecorded(f"job {job_id} batch {batch_no}: {exc}") from exc
                raise
        if batch is None:
            return BatchOutcome(0, 0, skipped_reason="job not found")
        if not batch.items:
            return BatchOutcome(0, 0, skipped_reason="nothing pending (already done)")
        timer.queue_wait(batch.queued_s)
        if any(item.attempts > 1 for item in batch.items):
            metrics.retry("redelivery")
        try:
            prepared = _embed(ctx, lock, batch)
        except BatchBusy:
            raise
        except Exception as exc:
            _record_failure(ctx, lock, batch, exc, probe_engine=True)
            raise
        if isinstance(prepared, BatchOutcome):
            return prepared
        timer.hand_over()
        handed_over = True
        written = ctx.writes.submit(lane, lambda: _store(ctx, lane, lock, prepared, timer))
        if written.done():
            return written.result()
        return BatchOutcome(0, 0, written_behind=True)
    except BatchBusy:
        # Its worker is alive; if it dies, its lock goes with its connection and the
        # reconciler sends the batch again, once the grace has passed since this claim.
        _date_claim(lane.connection, job_id, batch_no)
        return BatchOutcome(0, 0, skipped_reason="batch is being processed by another worker")
    finally:
        if not handed_over:
            lock.release()
            timer.finish()
            ctx.writes.release(lane)


def _store(
    ctx: WorkerContext, lane: DbSession, lock: BatchLock, prepared: EmbeddedBatch, timer: BatchTimer
) -> BatchOutcome:
    """Write a batch and end it: committed, or its error recorded for the reconciler's re-send."""
    batch = prepared.batch
    timer.take_over()
    what = f"writing job {batch.job_id} batch {batch.batch_no}"
    try:
        with (
            time_limit(ctx.settings.task_time_limit_s, what, backstop=False),
            metrics.stage("write"),
        ):
            outcome = lock.run(
                lambda conn: _write_batch(
                    conn,
                    ctx.embedder,
                    batch,
                    prepared.candidates,
                    prepared.gave_up,
                    prepared.embedded,
                    prepared.model_id,
                )
            )
        metrics.batch_stored(outcome)
    except BatchBusy:
        _date_claim(lane.connection, str(batch.job_id), batch.batch_no)
        return BatchOutcome(0, 0, skipped_reason="batch is being processed by another worker")
    except Exception as exc:
        _record_failure(ctx, lock, batch, exc, probe_engine=False)
        raise
    finally:
        lock.release()
        timer.finish()
    log.info(
        "job %s batch %d: %d embedded, %d unchanged, %d superseded, %d failed",
        batch.job_id,
        batch.batch_no,
        outcome.done - outcome.unchanged - outcome.superseded,
        outcome.unchanged,
        outcome.superseded,
        outcome.failed,
    )
    return outcome


def _record_failure(
    ctx: WorkerContext, lock: BatchLock, batch: ClaimedBatch, exc: Exception, probe_engine: bool
) -> None:
    metrics.batch_failed(transient=is_transient(exc))
    if is_transient(exc):
        # Past db_retry_timeout_s: the claim is recorded, so the reconciler sends the batch
        # again once Postgres answers.
        return
    if probe_engine and not engine_health.engine_works(ctx.embedder):
        lock.run(lambda conn: refund_attempt(conn, batch))
        engine_health.leave()
    # Leave the items pending with the reason: the reconciler sends the batch again, and the
    # attempt counter ends the retries.
    reason = f"{type(exc).__name__}: {exc}"
    lock.run(lambda conn: _record_error(conn, batch, reason))


def _date_claim(connect: Callable[[], psycopg.Connection[Any]], job_id: str, batch_no: int) -> None:
    try:
        date_claim(connect(), job_id, batch_no)
    except psycopg.Error as exc:
        # Best effort: without it the unclaimed-send backstop still re-sends the batch.
        log.warning("job %s batch %d: could not date a claim: %s", job_id, batch_no, exc)


def _record_error(conn: psycopg.Connection[Any], batch: ClaimedBatch, reason: str) -> None:
    with conn.transaction():
        record_batch_error(conn, batch, reason)


def _embed(
    ctx: WorkerContext, lock: BatchLock, batch: ClaimedBatch
) -> EmbeddedBatch | BatchOutcome:
    model_id = ctx.embedder.manifest.manifest_id
    if batch.manifest_id != model_id:
        # Never embed with another model than the collection's: fail loudly, per item.
        reason = f"worker serves {model_id}, collection needs {batch.manifest_id}"
        failures = {i.external_id: reason for i in batch.items}
        lock.run(lambda conn: _fail_all(conn, batch, failures))
        failed = BatchOutcome(0, len(batch.items))
        metrics.items_failed(failures, kind="wrong_model")
        metrics.batch_stored(failed)
        return failed

    max_attempts = ctx.settings.max_task_attempts
    gave_up = {
        item.external_id: f"gave up after {item.attempts - 1} attempts"
        + (f"; last error: {item.last_error}" if item.last_error else "")
        for item in batch.items
        if item.attempts > max_attempts
    }
    candidates = [i for i in batch.items if i.external_id not in gave_up]
    # An unlocked read, only to skip embedding what will not be written; the write
    # transaction decides again on locked rows.
    stored = lock.run(
        lambda conn: read_stored(
            conn, batch.vector_table, [i.external_id for i in candidates], lock=False
        )
    )
    to_embed = [
        i
        for i in candidates
        if decide(i.seq, i.content_hash, stored.get(i.external_id), model_id) is Action.WRITE
    ]
    embedded = embed_isolating(ctx.embedder, [(i.external_id, i.text) for i in to_embed])
    return EmbeddedBatch(batch, candidates, gave_up, embedded, model_id)


def _fail_all(conn: psycopg.Connection[Any], batch: ClaimedBatch, failures: dict[str, str]) -> None:
    with conn.transaction():
        finish_batch(conn, batch, [], [], failures)


def _write_batch(
    conn: psycopg.Connection[Any],
    embedder: TextEmbedder,
    batch: ClaimedBatch,
    candidates: Sequence[ClaimedItem],
    gave_up: dict[str, str],
    embedded: Embedded,
    model_id: str,
) -> BatchOutcome:
    """One transaction: decide on locked rows, write, refresh, finish. Safe to run again after a
    transient error (it reads everything it decides from afresh)."""
    with conn.transaction():
        # Items another worker finished while this one was reconnecting without the lock drop out.
        pending = pending_ids(conn, batch)
        failures = {k: v for k, v in gave_up.items() if k in pending}
        items = [i for i in candidates if i.external_id in pending]
        stored = read_stored(conn, batch.vector_table, [i.external_id for i in items], lock=True)
        actions = {
            i.external_id: decide(i.seq, i.content_hash, stored.get(i.external_id), model_id)
            for i in items
        }
        writes = [i for i in items if actions[i.external_id] is Action.WRITE]
        unseen = [
            (i.external_id, i.text)
            for i in writes
            if i.external_id not in embedded.vectors and i.external_id not in embedded.errors
        ]
        if unseen:
            # The stored text changed since the unlocked read (rare): embed these now.
            embedded.update(embed_isolating(embedder, unseen))
        failures |= {
            i.external_id: embedded.errors[i.external_id]
            for i in writes
            if i.external_id in embedded.errors
        }
        rows = [
            _row(i, embedded.vectors[i.external_id][1], embedded.sparse.get(i.external_id))
            for i in writes
            if i.external_id not in failures
        ]
        written: set[str] = set()
        if rows:
            vectors = np.stack([embedded.vectors[r.external_id][0] for r in rows])
            # Ids without a row under the locks just taken: copied straight into the table.
            absent = {r.external_id for r in rows} - stored.keys()
            if any(i.last_error for i in items):
                # This batch failed before: write item by item, so a poison item fails alone.
                written, write_failures = _write_isolated(
                    conn, batch, model_id, rows, vectors, absent
                )
                failures |= write_failures
            else:
                written = write_vectors(
                    conn, batch.vector_table, model_id, batch.job_id, rows, vectors, absent
                )
        unchanged = [_row(i, False) for i in items if actions[i.external_id] is Action.UNCHANGED]
        refreshed = refresh_unchanged(conn, batch.vector_table, model_id, batch.job_id, unchanged)
        done_ids = [i.external_id for i in items if i.external_id not in failures]
        finish_batch(
            conn,
            batch,
            done_ids=done_ids,
            truncated_ids=[r.external_id for r in rows if r.truncated and r.external_id in written],
            failures=failures,
            unchanged_ids=sorted(refreshed),
        )
    # Superseded: a newer submission of the id was stored (seen under the lock, or landing
    # between the lock and the upsert); the item is done and nothing was written.
    superseded = len(done_ids) - len(written) - len(refreshed)
    metrics.items_failed(failures, gave_up, embedded.errors)  # committed: counted once
    return BatchOutcome(len(done_ids), len(failures), len(refreshed), superseded)


def _row(item: ClaimedItem, truncated: bool, sparse: dict[int, float] | None = None) -> VectorRow:
    return VectorRow(
        item.external_id, item.text, item.metadata, item.content_hash, truncated, item.seq, sparse
    )


def _write_isolated(
    conn: psycopg.Connection[Any],
    batch: ClaimedBatch,
    model_id: str,
    rows: list[VectorRow],
    vectors: FloatArray,
    absent: set[str],
) -> tuple[set[str], dict[str, str]]:
    """Write each row under its own savepoint; returns the ids written and those that failed,
    with why."""
    written: set[str] = set()
    failures: dict[str, str] = {}
    for index, row in enumerate(rows):
        try:
            with conn.transaction():
                written |= write_vectors(
                    conn,
                    batch.vector_table,
                    model_id,
                    batch.job_id,
                    [row],
                    vectors[index : index + 1],
                    absent,
                )
        except psycopg.Error as exc:
            if is_transient(exc):
                raise  # the whole transaction runs again
            failures[row.external_id] = f"{type(exc).__name__}: {exc}".strip()[:2000]
    return written, failures
