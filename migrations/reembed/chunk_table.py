"""A chunking vectorizer's windows: each row's text cut into token windows (as a chunking
collection cuts documents, embedq_core/catalog.Chunking), kept in `<table>_<vector>_chunks`
beside the user's table, one row per window.

The user's table keeps only `<vector>_manifest` (set when the row's windows are written, NULL
while it waits) and `<vector>_queued_at`, so the backfill, the pending-rows index, status and
the lag work as for a vectorizer of one vector per row. The windows reference the row: a
deleted row's go with it (ON DELETE CASCADE), and a change of its text deletes them in the
writer's trigger, so a search never returns windows of a text the row no longer has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector import SparseVector
from psycopg import sql

from embedq_core.sparse_vectors import SparseWeights, top_weights
from embedq_core.staging import copy_to_stage
from migrations.reembed.state import Columns, Migration

ROW_STAGE = "embedq_reembed_window_rows"
WINDOW_STAGE = "embedq_reembed_windows"
# A sparse model's windows stage their weights too (a temp table keeps its first columns).
SPARSE_WINDOW_STAGE = "embedq_reembed_windows_sparse"


@dataclass(frozen=True)
class Window:
    """One window of a row's text: its number, text, character span in the text, unit vector
    and (a sparse model's) lexical weights."""

    chunk_no: int
    text: str
    span_start: int
    span_end: int
    vector: npt.NDArray[np.float32]
    sparse: SparseWeights | None = None


@dataclass(frozen=True)
class EncodedWindows:
    """Each text's windows, in the order of the texts."""

    windows: list[list[Window]]

    def row(self, index: int) -> EncodedWindows:
        """The one text at index, as a chunk of its own."""
        return EncodedWindows([self.windows[index]])


def create_statements(m: Migration) -> list[sql.Composed]:
    """The table of windows (none for a vectorizer of one vector per row): a row's windows go
    with it when it is deleted, and follow a changed primary key."""
    if m.chunk_table is None:
        return []
    cols = m.columns
    sparse: sql.Composable = sql.SQL("")
    if cols.sparse is not None:
        sparse = sql.SQL(", {} sparsevec({})").format(
            sql.Identifier(cols.sparse), sql.Literal(m.sparse_dimension)
        )
    return [
        sql.SQL(
            "CREATE TABLE {chunks} ({id} {id_type} NOT NULL REFERENCES {table} ({id})"
            " ON DELETE CASCADE ON UPDATE CASCADE, chunk_no integer NOT NULL,"
            " span_start integer NOT NULL, span_end integer NOT NULL, chunk_text text NOT NULL,"
            " {vector} vector({dimension}) NOT NULL{sparse}, PRIMARY KEY ({id}, chunk_no))"
        ).format(
            chunks=m.chunk_table,
            id=sql.Identifier(m.id_column),
            id_type=m.id_type_sql,
            table=m.table,
            vector=sql.Identifier(cols.new),
            dimension=sql.Literal(m.dimension),
            sparse=sparse,
        )
    ]


def dirty_function(m: Migration, cols: Columns, function: sql.Identifier) -> sql.Composed:
    """The writer's trigger function: stamps an inserted row as waiting; a changed text marks
    the row waiting again and deletes its windows at once (an emptied text is never embedded
    again, so nothing else would). SECURITY DEFINER: the writer may have no rights on the
    table of windows, which the vectorizer's owner created; every name in it is
    schema-qualified and its search_path pinned."""
    if m.chunk_table is None or m.queued_column is None:
        raise ValueError(f"{m.name} is not a chunking vectorizer")
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql"
        " SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$"
        " BEGIN IF TG_OP = 'INSERT' THEN"
        " IF NEW.{manifest} IS NULL THEN NEW.{queued} := pg_catalog.now(); END IF;"
        " ELSE NEW.{manifest} := NULL; NEW.{queued} := pg_catalog.now();"
        " DELETE FROM {chunks} WHERE {id} = OLD.{id};"
        " END IF; RETURN NEW; END $body$"
    ).format(
        function=function,
        manifest=sql.Identifier(cols.manifest),
        queued=sql.Identifier(m.queued_column),
        chunks=m.chunk_table,
        id=sql.Identifier(m.id_column),
    )


def write_windows(
    conn: psycopg.Connection[Any],
    m: Migration,
    rows: list[tuple[Any, str]],
    text_md5s: list[str],
    encoded: EncodedWindows,
) -> int:
    """Replace the windows of each row whose text is still the one embedded (its md5 in
    text_md5s) and mark it embedded; a row whose text changed meanwhile keeps waiting.
    Returns rows written."""
    if m.chunk_table is None:
        raise ValueError(f"{m.name} is not a chunking vectorizer")
    cols = m.columns
    copy_to_stage(
        conn,
        ROW_STAGE,
        [("id", "text"), ("text_md5", "text")],
        [[str(row_id), md5] for (row_id, _), md5 in zip(rows, text_md5s, strict=True)],
    )
    # Locking the user's rows first: a writer changing one now waits for this transaction, and
    # its trigger then deletes the windows written here.
    written = [
        str(r[0])
        for r in conn.execute(
            sql.SQL(
                "WITH written AS (UPDATE {table} t SET {manifest} = %s FROM {stage} s"
                " WHERE t.{id} = s.id::{id_type} AND md5({text}) = s.text_md5"
                " RETURNING t.{id} AS id, s.id AS staged),"
                " cleared AS (DELETE FROM {chunks} c USING written w WHERE c.{id} = w.id)"
                " SELECT staged FROM written"
            ).format(
                table=m.table,
                manifest=sql.Identifier(cols.manifest),
                stage=sql.Identifier(ROW_STAGE),
                id=sql.Identifier(m.id_column),
                id_type=m.id_type_sql,
                text=m.text_source.expression("t"),
                chunks=m.chunk_table,
            ),
            (m.manifest_id,),
        ).fetchall()
    ]
    if written:
        _insert_windows(conn, m, rows, encoded, set(written))
    return len(written)


def _insert_windows(
    conn: psycopg.Connection[Any],
    m: Migration,
    rows: list[tuple[Any, str]],
    encoded: EncodedWindows,
    written: set[str],
) -> None:
    cols = m.columns
    columns = [
        ("id", "text"), ("chunk_no", "integer"), ("span_start", "integer"),
        ("span_end", "integer"), ("chunk_text", "text"), ("embedding", "vector"),
    ]  # fmt: skip
    stage, sparse_column = WINDOW_STAGE, sql.Composed([])
    dimension = m.sparse_dimension
    if cols.sparse is not None:
        if dimension is None:
            raise ValueError(f"{m.name} stores lexical weights without a dimension")
        columns.append(("sparse", "sparsevec"))
        stage = SPARSE_WINDOW_STAGE
        sparse_column = sql.SQL(", {}").format(sql.Identifier(cols.sparse))
    values: list[list[Any]] = []
    for (row_id, _), windows in zip(rows, encoded.windows, strict=True):
        if str(row_id) not in written:
            continue
        for w in windows:
            value = [str(row_id), w.chunk_no, w.span_start, w.span_end, w.text, w.vector]
            if dimension is not None:
                if w.sparse is None:
                    raise ValueError(f"{m.name} stores lexical weights; the model gave none")
                value.append(SparseVector(top_weights(w.sparse), dimension))
            values.append(value)
    copy_to_stage(conn, stage, columns, values)
    conn.execute(
        sql.SQL(
            "INSERT INTO {chunks} ({id}, chunk_no, span_start, span_end, chunk_text, {vector}"
            "{sparse_column}) SELECT id::{id_type}, chunk_no, span_start, span_end, chunk_text,"
            " embedding{sparse_value} FROM {stage}"
        ).format(
            chunks=m.chunk_table,
            id=sql.Identifier(m.id_column),
            vector=sql.Identifier(cols.new),
            sparse_column=sparse_column,
            id_type=m.id_type_sql,
            sparse_value=sql.SQL(", sparse") if cols.sparse is not None else sql.SQL(""),
            stage=sql.Identifier(stage),
        )
    )
