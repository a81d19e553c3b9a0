"""Writing a chunking collection's documents: all of a document's chunks replaced at once.

A document's rows are keyed by (id, chunk_no); a new submission deletes every chunk of the id
and copies the new ones in, in one transaction, so a document that shrinks leaves no stale
chunk and a reader sees the old chunks or the new, never a mix. Documents are locked by
transaction-scoped advisory locks on (table, id) taken in id order (a row lock cannot cover a
document not stored yet), and the write is decided under them by the same submission-order
rule as single rows (rows.decide on the first chunk's seq, hash and model).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from embedq_core.sparse_vectors import SPARSE_COLUMN
from embedq_core.staging import copy_rows
from workers.delivery.isolation import EmbeddedChunk
from workers.delivery.rows import sparse_values


@dataclass(frozen=True)
class DocumentRows:
    """One document to store as its chunks."""

    external_id: str
    metadata: dict[str, Any]
    content_hash: bytes
    seq: int
    chunks: list[EmbeddedChunk]


def lock_documents(conn: psycopg.Connection[Any], vector_table: str, ids: Sequence[str]) -> None:
    """Hold every document's advisory lock until the caller's transaction ends, taken in id
    order so that two writers of overlapping documents wait rather than deadlock."""
    if not ids:
        return
    keys = [f"{vector_table}/{i}" for i in sorted(set(ids))]  # (a clash only makes one wait)
    # unnest yields the array's order, and the aggregate takes the locks row by row.
    conn.execute(
        "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest(%s::text[]) k",
        (keys,),
    )


def write_documents(
    conn: psycopg.Connection[Any],
    vector_table: str,
    manifest_id: str,
    job_id: uuid.UUID,
    documents: Sequence[DocumentRows],
) -> None:
    """Replace each document's chunks with its new ones, in the caller's transaction (the
    caller holds the documents' locks and has decided these writes under them)."""
    if not documents:
        return
    table = sql.Identifier(vector_table)
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(table),
        ([d.external_id for d in documents],),
    )
    chunks = [(d, c) for d in sorted(documents, key=lambda d: d.external_id) for c in d.chunks]
    sparse = sparse_values(conn, vector_table, [c.sparse for _, c in chunks])
    columns = [
        ("id", "text"), ("chunk_no", "int4"), ("span_start", "int4"), ("span_end", "int4"),
        ("text", "text"), ("metadata", "jsonb"), ("embedding", "vector"),
        ("content_hash", "bytea"), ("seq", "int8"), ("manifest_id", "text"), ("job_id", "uuid"),
        *([] if sparse is None else [(SPARSE_COLUMN, "sparsevec")]),
    ]  # fmt: skip
    values = [
        (
            d.external_id, c.chunk_no, c.span_start, c.span_end, c.text, Jsonb(d.metadata),
            c.vector, d.content_hash, d.seq, manifest_id, job_id,
            *([] if sparse is None else [sparse[index]]),
        )
        for index, (d, c) in enumerate(chunks)
    ]  # fmt: skip
    copy_rows(conn, vector_table, columns, values)
