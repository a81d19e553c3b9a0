"""Binary COPY: rows into a table's columns, and into a per-connection staging table (the first
half of every bulk upsert)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql


def copy_rows(
    conn: psycopg.Connection[Any],
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Iterable[Sequence[Any]],
) -> None:
    """Binary COPY of rows into `table`'s columns (name, type), inside the caller's transaction;
    columns not named take their defaults."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns)
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types([kind for _, kind in columns])
        for row in rows:
            copy.write_row(row)


def copy_to_stage(
    conn: psycopg.Connection[Any],
    stage: str,
    columns: Sequence[tuple[str, str]],
    rows: Iterable[Sequence[Any]],
) -> None:
    """Fill temp table `stage` (columns: name, type) with rows by binary COPY, inside the
    caller's transaction. The table is private to the connection and emptied at commit, so a
    failed write leaves nothing; it is also emptied first, so an earlier call in the same
    transaction (item-by-item retries) does not repeat."""
    name = sql.Identifier(stage)
    definition = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(column), sql.SQL(kind)) for column, kind in columns
    )
    conn.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
            name, definition
        )
    )
    conn.execute(sql.SQL("TRUNCATE {}").format(name))
    copy_rows(conn, stage, columns, rows)
