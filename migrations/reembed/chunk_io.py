"""Reading and writing one chunk of the user's table, and the log of committed chunks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector import SparseVector
from psycopg import sql
from psycopg.types.json import Jsonb

from embedq_core.sparse_vectors import SparseWeights, top_weights
from embedq_core.staging import copy_to_stage
from migrations.reembed import chunk_table, row_failures
from migrations.reembed.chunk_table import EncodedWindows
from migrations.reembed.state import Migration

STAGE = "embedq_reembed_stage"
# A sparse model's chunks stage their weights too: a stage of their own (a temp table keeps the
# columns it was created with).
SPARSE_STAGE = "embedq_reembed_stage_sparse"


@dataclass(frozen=True)
class Encoded:
    """A chunk's unit vectors, in order, and each text's lexical weights where the model has a
    sparse head (None: a dense model)."""

    dense: npt.NDArray[np.float32]
    sparse: list[SparseWeights] | None = None

    def row(self, index: int) -> Encoded:
        """The one row at index, as a chunk of its own."""
        return Encoded(
            self.dense[index : index + 1],
            None if self.sparse is None else [self.sparse[index]],
        )


def json_key(value: Any) -> Any:
    """A primary key value as JSON can hold it (the checkpoint and the chunk log are JSONB)."""
    return value if isinstance(value, int | str) else str(value)


def next_rows(conn: psycopg.Connection[Any], m: Migration) -> list[tuple[Any, str]]:
    """The next chunk of (id, text) after the checkpoint: every row with text in the keyset
    phase, rows with text and no new vector after it; rows refused recently (or parked) for
    their current text are left out (row_failures.py)."""
    cols, source = m.columns, m.text_source
    row_id = sql.SQL("t.{}").format(sql.Identifier(m.id_column))
    conditions = [source.has_text(), row_failures.excluded(m, "t", row_id)]
    if m.phase != "keyset":
        conditions.append(sql.SQL("{} IS NULL").format(sql.Identifier(cols.pending)))
    if m.checkpoint is not None:
        conditions.append(
            sql.SQL("{} > {}::{}").format(row_id, sql.Literal(m.checkpoint), m.id_type_sql)
        )
    query = sql.SQL(
        "SELECT {id}, {text} FROM {table} t WHERE {where} ORDER BY {id} LIMIT {n}"
    ).format(
        id=row_id,
        text=source.expression("t"),
        table=m.table,
        where=sql.SQL(" AND ").join(conditions),
        n=sql.Literal(m.chunk_size),
    )
    return [(r[0], r[1]) for r in conn.execute(query).fetchall()]


def text_md5(text: str) -> str:
    """The text's md5 as Postgres's md5() writes it (the write check and row failures)."""
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def write_vectors(
    conn: psycopg.Connection[Any],
    m: Migration,
    rows: list[tuple[Any, str]],
    encoded: Encoded | EncodedWindows,
) -> int:
    """Set the new vector (and weights) where the text is still the one embedded (a text changed
    meanwhile keeps NULL and is caught up later); a chunking vectorizer's rows get their
    windows instead (chunk_table.py). Returns rows written."""
    if isinstance(encoded, EncodedWindows):
        return chunk_table.write_windows(
            conn, m, rows, [text_md5(text) for _, text in rows], encoded
        )
    cols = m.columns
    columns = [("id", "text"), ("embedding", "vector"), ("text_md5", "text")]
    values: list[list[Any]] = [
        [str(row_id), vector, text_md5(text)]
        for (row_id, text), vector in zip(rows, encoded.dense, strict=True)
    ]
    stage, assign_sparse = STAGE, sql.Composed([])
    if cols.sparse is not None:
        if encoded.sparse is None or m.sparse_dimension is None:
            raise ValueError(f"{m.name} stores lexical weights; the model gave none")
        columns.append(("sparse", "sparsevec"))
        for value, weights in zip(values, encoded.sparse, strict=True):
            value.append(SparseVector(top_weights(weights), m.sparse_dimension))
        stage = SPARSE_STAGE
        assign_sparse = sql.SQL(", {} = s.sparse").format(sql.Identifier(cols.sparse))
    copy_to_stage(conn, stage, columns, values)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "UPDATE {table} t SET {new} = s.embedding, {manifest} = %s{sparse} FROM {stage} s"
                " WHERE t.{id} = s.id::{id_type} AND md5({text}) = s.text_md5"
            ).format(
                table=m.table,
                new=sql.Identifier(cols.new),
                manifest=sql.Identifier(cols.manifest),
                sparse=assign_sparse,
                stage=sql.Identifier(stage),
                id=sql.Identifier(m.id_column),
                id_type=m.id_type_sql,
                text=m.text_source.expression("t"),
            ),
            (m.manifest_id,),
        )
        return cur.rowcount


def write_chunk(
    conn: psycopg.Connection[Any],
    m: Migration,
    rows: list[tuple[Any, str]],
    encoded: Encoded | EncodedWindows,
    options: row_failures.RowFailureOptions,
) -> tuple[int, int]:
    """write_vectors for the chunk; if the table refuses the write, row by row, each under a
    savepoint, recording the rows it refuses (row_failures.py) and writing the others.
    Returns (rows written, rows refused)."""
    try:
        with conn.transaction():
            written = write_vectors(conn, m, rows, encoded)
        row_failures.clear(conn, m, [json_key(row_id) for row_id, _ in rows])
        return written, 0
    except psycopg.Error as exc:
        if conn.closed or conn.broken or not row_failures.refuses_a_row(exc):
            raise  # not about one row (privileges, locks, a dropped column): the step fails
    written = 0
    refused: list[tuple[Any, str, BaseException]] = []
    accepted = []
    for index, row in enumerate(rows):
        try:
            with conn.transaction():
                written += write_vectors(conn, m, [row], encoded.row(index))
            accepted.append(json_key(row[0]))
        except psycopg.Error as exc:
            if conn.closed or conn.broken or not row_failures.refuses_a_row(exc):
                raise
            refused.append((json_key(row[0]), text_md5(row[1]), exc))
    row_failures.record(conn, m, refused, options)
    row_failures.clear(conn, m, accepted)
    return written, len(refused)


def log_chunk(
    conn: psycopg.Connection[Any],
    m: Migration,
    rows: list[tuple[Any, str]],
    written: int,
    seconds: float,
) -> None:
    """Record a committed chunk (status computes the recent rate from these)."""
    conn.execute(
        "INSERT INTO reembed_chunks (migration, chunk_no, phase, first_id, last_id,"
        " rows_read, rows_written, seconds) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            m.name,
            m.chunks_done + 1,
            m.phase,
            Jsonb(json_key(rows[0][0])),
            Jsonb(json_key(rows[-1][0])),
            len(rows),
            written,
            seconds,
        ),
    )
