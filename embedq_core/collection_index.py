"""A collection's HNSW index is built after its bulk load, not row by row during it.

Inserting into an HNSW index costs a graph search per row: measured with `embedq bench
write-path`, 1024-d rows go in about 50× slower with the index present than without. So a new
collection's table starts without it; once the collection has rows and its unfinished jobs hold
fewer than `index_pending_items_below` pending items (its bulk load is over, or what arrives is
a steady stream of small jobs, which would otherwise keep a job unfinished at every moment and
the table unindexed for ever), a worker's maintenance thread builds it `CONCURRENTLY` (readers
and writers go on), and from then on Postgres keeps it up to date. Until then a search scans
the table exactly: right answers, slower on large tables.
"""

from __future__ import annotations

import logging
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
_PENDING_BELOW = """
          AND (SELECT coalesce(sum(j.total - j.done - j.failed), 0) FROM jobs j
               WHERE j.collection = c.name AND j.finished_at IS NULL) < %(pending_below)s"""


def collections_to_index(conn: psycopg.Connection[Any], pending_items_below: int) -> list[str]:
    """Vector tables without a valid HNSW index whose collection has rows and fewer than
    pending_items_below items pending in unfinished jobs: their bulk load is over."""
    rows = conn.execute(
        """
        SELECT c.vector_table FROM collections c
        WHERE c.dimension <= %(max_dimensions)s
          AND NOT EXISTS (
                SELECT 1 FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
                WHERE x.relname = c.vector_table || '_embedding_hnsw' AND i.indisvalid)
          AND to_regclass(quote_ident(c.vector_table)) IS NOT NULL"""
        + _PENDING_BELOW
        + """
        ORDER BY c.name
        """,
        {"max_dimensions": MAX_HNSW_DIMENSIONS, "pending_below": pending_items_below},
    ).fetchall()
    return [r[0] for r in rows if _has_rows(conn, r[0])]


def sparse_collections_to_index(
    conn: psycopg.Connection[Any], pending_items_below: int
) -> list[str]:
    """Vector tables of sparse models without a valid index on their lexical weights, whose
    bulk load is over (as collections_to_index). Rows hold at most STORED_SPARSE_TOKENS
    non-zeros, within what pgvector's HNSW takes (1,000)."""
    rows = conn.execute(
        """
        SELECT c.vector_table FROM collections c
        JOIN model_manifests m ON m.id = c.manifest_id
        WHERE (m.manifest ->> 'sparse')::boolean
          AND NOT EXISTS (
                SELECT 1 FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
                WHERE x.relname = c.vector_table || '_sparse_hnsw' AND i.indisvalid)
          AND to_regclass(quote_ident(c.vector_table)) IS NOT NULL"""
        + _PENDING_BELOW
        + """
        ORDER BY c.name
        """,
        {"pending_below": pending_items_below},
    ).fetchall()
    return [r[0] for r in rows if _has_rows(conn, r[0])]


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
