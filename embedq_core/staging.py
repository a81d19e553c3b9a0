"""Binary COPY into a per-connection staging table, the first half of every bulk upsert."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql


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
    with (
        conn.cursor() as cur,
        cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(name)) as copy,
    ):
        copy.set_types([kind for _, kind in columns])
        for row in rows:
            copy.write_row(row)
