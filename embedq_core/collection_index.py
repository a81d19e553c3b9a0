"""A collection's HNSW index is built after its bulk load, not row by row during it.

Inserting into an HNSW index costs a graph search per row: measured with `embedq bench
write-path`, 1024-d rows go in about 50× slower with the index present than without. So a new
collection's table starts without it; once the collection has rows and its unfinished jobs hold
fewer than `index_pending_items_below` pending items (its bulk load is over, or what arrives is
a steady stream of small jobs, which would otherwise keep a job unfinished at every moment and
the table unindexed for ever), a worker's maintenance thread builds it `CONCURRENTLY` (readers
and writers go on), and from then on Postgres keeps it up to date. Until then a search scans
the table exactly: right answers, slower on large tables.

A collection with nothing pending is built at once. One with a few items pending is either a
bulk load's last batches or a stream; the first pass that finds it so only remembers it, and
any later pass that finds it under the bound again builds it. A load's last < 256 items
usually finish within that poll interval (MiniLM on 2 CPU cores: under a second), so its build
no longer takes CPU from them (measured with `embedq bench pipeline`: Postgres used 1.5–1.6
CPU-s instead of 0.4–0.5 when the build overlapped the tail of a 5,000-text load on 2 cores);
a large model on a CPU may still be writing its tail when the build starts. A stream gets its
index on its second pass under the bound, even one that crosses the bound between passes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from embedq_core.sparse_vectors import SPARSE_COLUMN

log = logging.getLogger(__name__)

# pgvector's HNSW indexes `vector` up to 2,000 dimensions; a wider model's table is scanned.
MAX_HNSW_DIMENSIONS = 2000
# One builder per collection across the fleet (the key's second half is the table's oid).
INDEX_LOCK_CLASS = 0x68_6E_73_77  # "hnsw"


def hnsw_index_name(vector_table: str) -> str:
    """The name of a collection table's HNSW index (fits in 63 bytes: names are <= 40)."""
    return f"{vector_table}_embedding_hnsw"


def sparse_index_name(vector_table: str) -> str:
    """The name of a sparse collection's HNSW index on its lexical weights."""
    return f"{vector_table}_sparse_hnsw"


# A collection's pending items: what its unfinished jobs have not yet done or failed.
_PENDING = """(SELECT coalesce(sum(j.total - j.done - j.failed), 0) FROM jobs j
               WHERE j.collection = c.name AND j.finished_at IS NULL)"""


@dataclass(frozen=True)
class IndexCandidate:
    """A table without its index whose collection has rows and fewer pending items than the
    bound: its bulk load is over (pending_items 0), ending, or it is fed by a stream."""

    vector_table: str
    pending_items: int


def collections_to_index(
    conn: psycopg.Connection[Any], pending_items_below: int
) -> list[IndexCandidate]:
    """Vector tables without a valid HNSW index whose collection has rows and fewer than
    pending_items_below items pending in unfinished jobs."""
    rows = conn.execute(
        """
        SELECT c.vector_table, """
        + _PENDING
        + """ AS pending FROM collections c
        WHERE c.dimension <= %(max_dimensions)s
          AND NOT EXISTS (
                SELECT 1 FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
                WHERE x.relname = c.vector_table || '_embedding_hnsw' AND i.indisvalid)
          AND to_regclass(quote_ident(c.vector_table)) IS NOT NULL
        ORDER BY c.name
        """,
        {"max_dimensions": MAX_HNSW_DIMENSIONS},
    ).fetchall()
    return _candidates(conn, rows, pending_items_below)


def sparse_collections_to_index(
    conn: psycopg.Connection[Any], pending_items_below: int
) -> list[IndexCandidate]:
    """Vector tables of sparse models without a valid index on their lexical weights, with
    rows and few items pending (as collections_to_index). Rows hold at most
    STORED_SPARSE_TOKENS non-zeros, within what pgvector's HNSW takes (1,000)."""
    rows = conn.execute(
        """
        SELECT c.vector_table, """
        + _PENDING
        + """ AS pending FROM collections c
        JOIN model_manifests m ON m.id = c.manifest_id
        WHERE (m.manifest ->> 'sparse')::boolean
          AND NOT EXISTS (
                SELECT 1 FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
                WHERE x.relname = c.vector_table || '_sparse_hnsw' AND i.indisvalid)
          AND to_regclass(quote_ident(c.vector_table)) IS NOT NULL
        ORDER BY c.name
        """
    ).fetchall()
    return _candidates(conn, rows, pending_items_below)


def _candidates(
    conn: psycopg.Connection[Any], rows: Sequence[Any], pending_items_below: int
) -> list[IndexCandidate]:
    return [
        IndexCandidate(table, int(pending))
        for table, pending in rows
        if pending < pending_items_below and _has_rows(conn, table)
    ]


def due_now(candidates: list[IndexCandidate], seen_pending: set[str]) -> tuple[list[str], set[str]]:
    """The tables to build on this pass, and the tables seen with a few items pending so far
    (seen_pending plus this pass's): a candidate with nothing pending is due; one with items
    pending only if an earlier pass saw it so too. The caller forgets a table once built."""
    due = [
        c.vector_table for c in candidates if c.pending_items == 0 or c.vector_table in seen_pending
    ]
    seen = seen_pending | {c.vector_table for c in candidates if c.pending_items > 0}
    return due, seen


def _has_rows(conn: psycopg.Connection[Any], vector_table: str) -> bool:
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(vector_table))
    row = conn.execute(query).fetchone()
    return bool(row and row[0])


def build_hnsw_index(
    conn: psycopg.Connection[Any], vector_table: str, maintenance_work_mem: str
) -> bool:
    """Build the table's HNSW index unless another worker is; True when this call built it.
    conn must be in autocommit mode (CREATE INDEX CONCURRENTLY runs outside a transaction)."""
    return _build(
        conn, vector_table, hnsw_index_name(vector_table), "embedding vector_ip_ops",
        maintenance_work_mem,
    )  # fmt: skip


def build_sparse_index(
    conn: psycopg.Connection[Any], vector_table: str, maintenance_work_mem: str
) -> bool:
    """Build the HNSW index on a sparse table's lexical weights (inner product), as
    build_hnsw_index does for its dense vectors."""
    return _build(
        conn, vector_table, sparse_index_name(vector_table),
        f"{SPARSE_COLUMN} sparsevec_ip_ops", maintenance_work_mem,
    )  # fmt: skip


def _build(
    conn: psycopg.Connection[Any],
    vector_table: str,
    index_name: str,
    column_ops: str,
    maintenance_work_mem: str,
) -> bool:
    table = sql.Identifier(vector_table)
    index = sql.Identifier(index_name)
    lock = conn.execute(
        "SELECT pg_try_advisory_lock(%s, %s::regclass::oid::int)",
        (INDEX_LOCK_CLASS, vector_table),
    ).fetchone()
    if not (lock and lock[0]):
        return False
    try:
        # A build killed half-way leaves an invalid index behind: drop it and build again.
        invalid = conn.execute(
            "SELECT 1 FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid"
            " WHERE x.relname = %s AND NOT i.indisvalid",
            (index_name,),
        ).fetchone()
        if invalid:
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(index))
        conn.execute(
            sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(maintenance_work_mem))
        )
        log.info("building the HNSW index %s", index_name)
        conn.execute(
            sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING hnsw ({})").format(
                index, table, sql.SQL(column_ops)
            )
        )
        return True
    finally:
        conn.execute(
            "SELECT pg_advisory_unlock(%s, %s::regclass::oid::int)",
            (INDEX_LOCK_CLASS, vector_table),
        )
