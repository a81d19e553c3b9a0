"""A batch's write transaction: decide on locked rows, write vectors, refresh, finish the batch.

Safe to run again after a transient error: it reads everything it decides from afresh. A batch
that failed before is written item by item, so a poison item fails alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from embedq_core.lifecycle.claims import ClaimedBatch, ClaimedItem, finish_batch, pending_ids
from workers.delivery.db import is_transient
from workers.delivery.isolation import Embedded, TextEmbedder, embed_isolating
from workers.delivery.rows import (
    Action,
    VectorRow,
    decide,
    read_stored,
    refresh_unchanged,
    write_vectors,
)
from workers.engine.pooling import FloatArray
from workers.telemetry import metrics


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


def fail_all(conn: psycopg.Connection[Any], batch: ClaimedBatch, failures: dict[str, str]) -> None:
    """Fail every item of the batch with its reason, in one transaction."""
    with conn.transaction():
        finish_batch(conn, batch, [], [], failures)


def still_pending(
    conn: psycopg.Connection[Any],
    batch: ClaimedBatch,
    candidates: Sequence[ClaimedItem],
    gave_up: dict[str, str],
) -> tuple[list[ClaimedItem], dict[str, str]]:
    """The candidates still pending, and the give-ups still to record: items another worker
    finished while this one was reconnecting without the lock drop out."""
    pending = pending_ids(conn, batch)
    failures = {k: v for k, v in gave_up.items() if k in pending}
    return [i for i in candidates if i.external_id in pending], failures


def write_batch(
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
        items, failures = still_pending(conn, batch, candidates, gave_up)
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
