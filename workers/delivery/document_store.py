"""A chunking collection's batch written: each document's chunks replace its old ones.

The same steps as store.write_batch, on documents: decide under the documents' locks, embed
what changed since the unlocked read, write, refresh the unchanged, finish the batch with each
document's chunk count. A batch that failed before is written document by document, so a
poison document fails alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from embedq_core.lifecycle.claims import ClaimedBatch, ClaimedItem, finish_batch
from workers.delivery.db import is_transient
from workers.delivery.document_rows import DocumentRows, lock_documents, write_documents
from workers.delivery.isolation import Embedded, TextEmbedder, embed_documents_isolating
from workers.delivery.rows import Action, VectorRow, decide, read_stored, refresh_unchanged
from workers.delivery.store import BatchOutcome, still_pending
from workers.telemetry import metrics


def write_document_batch(
    conn: psycopg.Connection[Any],
    embedder: TextEmbedder,
    batch: ClaimedBatch,
    candidates: Sequence[ClaimedItem],
    gave_up: dict[str, str],
    embedded: Embedded,
    model_id: str,
) -> BatchOutcome:
    """One transaction: lock the documents, decide, write their chunks, refresh, finish."""
    if batch.chunking is None:
        raise ValueError(f"{batch.collection} is not a chunking collection")
    with conn.transaction():
        items, failures = still_pending(conn, batch, candidates, gave_up)
        ids = [i.external_id for i in items]
        lock_documents(conn, batch.vector_table, ids)
        stored = read_stored(conn, batch.vector_table, ids, lock=False, documents=True)
        actions = {
            i.external_id: decide(i.seq, i.content_hash, stored.get(i.external_id), model_id)
            for i in items
        }
        writes = [i for i in items if actions[i.external_id] is Action.WRITE]
        unseen = [
            (i.external_id, i.text)
            for i in writes
            if not embedded.has_result(i.external_id) and i.external_id not in embedded.errors
        ]
        if unseen:  # the stored document changed since the unlocked read (rare)
            embedded.update(embed_documents_isolating(embedder, unseen, batch.chunking))
        failures |= {
            i.external_id: embedded.errors[i.external_id]
            for i in writes
            if i.external_id in embedded.errors
        }
        documents = [
            DocumentRows(
                i.external_id, i.metadata, i.content_hash, i.seq, embedded.chunks[i.external_id]
            )
            for i in writes
            if i.external_id not in failures
        ]
        if any(i.last_error for i in items):
            written, write_failures = _write_isolated(conn, batch, model_id, documents)
            failures |= write_failures
        else:
            write_documents(conn, batch.vector_table, model_id, batch.job_id, documents)
            written = documents
        unchanged = [
            VectorRow(i.external_id, i.text, i.metadata, i.content_hash, False, i.seq)
            for i in items
            if actions[i.external_id] is Action.UNCHANGED
        ]
        refreshed = refresh_unchanged(conn, batch.vector_table, model_id, batch.job_id, unchanged)
        done_ids = [i.external_id for i in items if i.external_id not in failures]
        finish_batch(
            conn,
            batch,
            done_ids=done_ids,
            truncated_ids=[],  # a document is cut into chunks, never truncated
            failures=failures,
            unchanged_ids=sorted(refreshed),
            chunk_counts={d.external_id: len(d.chunks) for d in written},
        )
    superseded = len(done_ids) - len(written) - len(refreshed)
    metrics.items_failed(failures, gave_up, embedded.errors)
    return BatchOutcome(len(done_ids), len(failures), len(refreshed), superseded)


def _write_isolated(
    conn: psycopg.Connection[Any],
    batch: ClaimedBatch,
    model_id: str,
    documents: list[DocumentRows],
) -> tuple[list[DocumentRows], dict[str, str]]:
    """Write each document under its own savepoint; the documents written, and those that
    failed with why."""
    written: list[DocumentRows] = []
    failures: dict[str, str] = {}
    for document in documents:
        try:
            with conn.transaction():
                write_documents(conn, batch.vector_table, model_id, batch.job_id, [document])
            written.append(document)
        except psycopg.Error as exc:
            if is_transient(exc):
                raise
            failures[document.external_id] = f"{type(exc).__name__}: {exc}".strip()[:2000]
    return written, failures
