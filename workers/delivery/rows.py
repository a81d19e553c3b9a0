"""Writing vectors to pgvector: new ids by binary COPY straight into the table, the others by
binary COPY into a staging table, then one upsert.

Every write is guarded by submission order: a row only takes an item whose seq is at least the
row's, so a late redelivery of an older submission never overwrites a newer one. Rows are
locked and written in id order, so two batches sharing ids wait for each other instead of
deadlocking.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector import SparseVector
from psycopg import sql
from psycopg.types.json import Jsonb

from embedq_core.sparse_vectors import SPARSE_COLUMN, top_weights
from embedq_core.staging import copy_rows, copy_to_stage

STAGE_TABLE = "embedq_stage"


@dataclass(frozen=True)
class VectorRow:
    """One item to store, with what its vector row records besides the vector."""

    external_id: str
    text: str
    metadata: dict[str, Any]
    content_hash: bytes
    truncated: bool
    seq: int
    sparse: dict[int, float] | None = None  # a sparse model's lexical weights


@dataclass(frozen=True)
class StoredRow:
    """What the vectors table holds for an id, as far as deciding a write needs."""

    seq: int
    content_hash: bytes
    manifest_id: str


def read_stored(
    conn: psycopg.Connection[Any],
    vector_table: str,
    ids: Sequence[str],
    lock: bool,
    documents: bool = False,
) -> dict[str, StoredRow]:
    """The stored rows of ids; with lock, locked FOR UPDATE in id order until the caller's
    transaction ends, so what is decided from them still holds when the writes run. With
    documents (a chunking collection's table), each document's first chunk, which carries what
    all its chunks do (the caller locks documents itself: document_rows.lock_documents)."""
    if not ids:
        return {}
    first_chunk = sql.SQL(" AND chunk_no = 0") if documents else sql.SQL("")
    query = sql.SQL(
        "SELECT id, seq, content_hash, manifest_id FROM {} WHERE id = ANY(%s){} ORDER BY id"
    ).format(sql.Identifier(vector_table), first_chunk)
    if lock:
        query += sql.SQL(" FOR UPDATE")
    rows = conn.execute(query, (list(ids),)).fetchall()
    return {r[0]: StoredRow(r[1], bytes(r[2]), r[3]) for r in rows}


def write_vectors(
    conn: psycopg.Connection[Any],
    vector_table: str,
    manifest_id: str,
    job_id: uuid.UUID,
    rows: Sequence[VectorRow],
    vectors: npt.NDArray[np.float32],
    absent: AbstractSet[str],
) -> set[str]:
    """Upsert rows with their vectors, keyed by external id, in the caller's transaction.
    Returns the ids written; an id missing from it holds a newer submission, left as it is.
    Rows with lexical weights also write their top STORED_SPARSE_TOKENS to the sparse column.

    `absent`: ids the caller saw without a row, under its row locks. Those rows go straight into
    the table by binary COPY, skipping the staging table and the upsert (a bulk load's rows are
    nearly all new); if another writer inserted one of them meanwhile, the COPY is rolled back
    to its savepoint and those rows take the upsert like the rest."""
    sparse = sparse_values(conn, vector_table, [r.sparse for r in rows])
    values = [
        (r.external_id, r.text, Jsonb(r.metadata), vector, r.content_hash, r.truncated, r.seq)
        + (() if sparse is None else (sparse[i],))
        for i, (r, vector) in enumerate(zip(rows, vectors, strict=True))
    ]
    columns = [*STAGE_COLUMNS, *([] if sparse is None else [(SPARSE_COLUMN, "sparsevec")])]
    fresh = sorted((v for v in values if v[0] in absent), key=lambda v: str(v[0]))
    written: set[str] = set()
    if fresh:
        try:
            with conn.transaction():
                _copy_into_table(conn, vector_table, manifest_id, job_id, columns, fresh)
            written = {str(v[0]) for v in fresh}
        except psycopg.errors.UniqueViolation:
            pass  # inserted by another writer since the caller looked: upsert them below
    rest = [v for v in values if v[0] not in written]
    if rest:
        written |= _upsert_via_stage(conn, vector_table, manifest_id, job_id, columns, rest)
    return written


# Staged and copied columns, besides the sparse column of sparse models.
STAGE_COLUMNS = [
    ("id", "text"),
    ("text", "text"),
    ("metadata", "jsonb"),
    ("embedding", "vector"),
    ("content_hash", "bytea"),
    ("truncated", "bool"),
    ("seq", "int8"),
]


def _copy_into_table(
    conn: psycopg.Connection[Any],
    vector_table: str,
    manifest_id: str,
    job_id: uuid.UUID,
    columns: Sequence[tuple[str, str]],
    values: Sequence[tuple[Any, ...]],
) -> None:
    copy_rows(
        conn,
        vector_table,
        [*columns, ("manifest_id", "text"), ("job_id", "uuid")],
        ((*value, manifest_id, job_id) for value in values),
    )


def _upsert_via_stage(
    conn: psycopg.Connection[Any],
    vector_table: str,
    manifest_id: str,
    job_id: uuid.UUID,
    columns: Sequence[tuple[str, str]],
    values: Sequence[tuple[Any, ...]],
) -> set[str]:
    sparse = any(c == SPARSE_COLUMN for c, _ in columns)
    # A temp table's columns are fixed once created on a connection: sparse rows get their own.
    stage = f"{STAGE_TABLE}_sparse" if sparse else STAGE_TABLE
    copy_to_stage(conn, stage, columns, values)
    column = sql.Identifier(SPARSE_COLUMN)
    no_sql = sql.SQL("")
    written = conn.execute(
        sql.SQL(
            """
            INSERT INTO {table} AS v (id, text, metadata, embedding, manifest_id,
                                      content_hash, truncated, job_id, seq, updated_at{insert})
            SELECT s.id, s.text, s.metadata, s.embedding, %s, s.content_hash, s.truncated,
                   %s, s.seq, now(){select}
            FROM {stage} s ORDER BY s.id
            ON CONFLICT (id) DO UPDATE SET
                text = EXCLUDED.text, metadata = EXCLUDED.metadata,
                embedding = EXCLUDED.embedding, manifest_id = EXCLUDED.manifest_id,
                content_hash = EXCLUDED.content_hash, truncated = EXCLUDED.truncated,
                job_id = EXCLUDED.job_id, seq = EXCLUDED.seq, updated_at = now(){update}
            WHERE v.seq <= EXCLUDED.seq
            RETURNING v.id
            """
        ).format(
            table=sql.Identifier(vector_table),
            stage=sql.Identifier(stage),
            insert=sql.SQL(", {}").format(column) if sparse else no_sql,
            select=sql.SQL(", s.{}").format(column) if sparse else no_sql,
            update=sql.SQL(", {0} = EXCLUDED.{0}").format(column) if sparse else no_sql,
        ),
        (manifest_id, job_id),
    ).fetchall()
    return {r[0] for r in written}


def refresh_unchanged(
    conn: psycopg.Connection[Any],
    vector_table: str,
    manifest_id: str,
    job_id: uuid.UUID,
    rows: Sequence[VectorRow],
) -> set[str]:
    """Same text, same model: keep the vector, take the newer submission's metadata. Returns
    the ids updated (a row holding another text, model or a newer submission is left alone)."""
    if not rows:
        return set()
    ordered = sorted(rows, key=lambda r: r.external_id)
    updated = conn.execute(
        sql.SQL(
            """
            UPDATE {} v SET metadata = n.metadata, job_id = %s, seq = n.seq, updated_at = now()
            FROM unnest(%s::text[], %s::jsonb[], %s::int8[], %s::bytea[])
                 AS n(id, metadata, seq, content_hash)
            WHERE v.id = n.id AND v.seq <= n.seq AND v.content_hash = n.content_hash
              AND v.manifest_id = %s
            RETURNING v.id
            """
        ).format(sql.Identifier(vector_table)),
        (
            job_id,
            [r.external_id for r in ordered],
            [Jsonb(r.metadata) for r in ordered],
            [r.seq for r in ordered],
            [r.content_hash for r in ordered],
            manifest_id,
        ),
    ).fetchall()
    return {r[0] for r in updated}


# Deciding what a batch's item does to its vector row: write it, keep the vector, or nothing.
#
# The same rule runs twice per batch: before embedding, on an unlocked read, to skip embedding
# what will not be written; and inside the write transaction, on rows locked FOR UPDATE, where
# the decision is final.
class Action(Enum):
    """What one item does to the stored row of its id."""

    WRITE = "write"  # embed and upsert
    UNCHANGED = "unchanged"  # same text and model: keep the vector, take the metadata
    SUPERSEDED = "superseded"  # a newer submission of the id is stored: write nothing


def decide(seq: int, content_hash: bytes, stored: StoredRow | None, manifest_id: str) -> Action:
    """The action for an item with this submission order and text hash, given the stored row."""
    if stored is None:
        return Action.WRITE
    if stored.seq > seq:
        return Action.SUPERSEDED
    if stored.content_hash == content_hash and stored.manifest_id == manifest_id:
        return Action.UNCHANGED
    return Action.WRITE


# Lexical weights as the writer stores them: the top STORED_SPARSE_TOKENS of each row, as a
# sparsevec of the collection column's own dimension (the model's vocabulary size).
def sparse_column_dimension(conn: psycopg.Connection[Any], vector_table: str) -> int:
    """The dimension of the table's sparsevec column (its type modifier)."""
    row = conn.execute(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s"
        " AND NOT attisdropped",
        (vector_table, SPARSE_COLUMN),
    ).fetchone()
    if row is None:
        raise ValueError(f"{vector_table} has no {SPARSE_COLUMN} column for lexical weights")
    return int(row[0])


def sparse_values(
    conn: psycopg.Connection[Any],
    vector_table: str,
    weights: Sequence[Mapping[int, float] | None],
) -> list[SparseVector] | None:
    """None when no row has lexical weights (a dense model); else one SparseVector per row."""
    if all(w is None for w in weights):
        return None
    dimension = sparse_column_dimension(conn, vector_table)
    return [SparseVector(top_weights(w or {}), dimension) for w in weights]
