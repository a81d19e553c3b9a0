"""Lexical weights as the writer stores them: the top STORED_SPARSE_TOKENS of each row, as a
sparsevec of the collection column's own dimension (the model's vocabulary size)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from pgvector import SparseVector

from embedq_core.sparse_vectors import SPARSE_COLUMN, top_weights


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
