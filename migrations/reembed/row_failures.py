"""Rows whose vector could not be written: the table's own trigger or constraint refused the
UPDATE of that one row (refuses_a_row says which errors are about a row). A chunk whose write
fails so is written again row by row (each under a savepoint) to find them; they are recorded
with the error and retried with backoff, and after the allowed attempts parked, so one bad row
never holds up the rest. A row whose text changes starts afresh (the record is keyed by the
text's md5). Engine failures, and write errors about the table rather than a row, are not row
failures: they fail the step (backfill.py), which is retried as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from migrations.reembed.attempts import describe
from migrations.reembed.state import Migration

MAX_ROW_RETRY_DELAY_S = 3600.0
# Failures listed by status.
SHOWN = 5


@dataclass(frozen=True)
class RowFailureOptions:
    """How often a refused row is retried: attempts before parking, first delay (doubling)."""

    max_attempts: int
    first_delay_s: float


@dataclass(frozen=True)
class RowFailure:
    """One failing row as status shows it."""

    row_key: Any
    attempts: int
    parked: bool
    error: str
    retry_at: datetime
    last_failed_at: datetime


# SQLSTATEs that say the table refused this row's values: an integrity constraint (class 23),
# a data exception (class 22), or the table's own trigger (RAISE EXCEPTION: P0001, ASSERT:
# P0004). Anything else (privileges, locks, a dropped column) is about the table or the
# session, not the row: the step fails and is retried as a whole.
ROW_SQLSTATE_CLASSES = ("22", "23")
ROW_SQLSTATES = ("P0001", "P0004")


def refuses_a_row(exc: BaseException) -> bool:
    """Whether a failed write was the table refusing particular values."""
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in ROW_SQLSTATE_CLASSES or state in ROW_SQLSTATES


def excluded(m: Migration, row: str, id_sql: sql.Composable) -> sql.Composable:
    """A pass's condition leaving out rows not due again yet (or parked) for their current
    text."""
    return sql.SQL(
        "NOT EXISTS (SELECT 1 FROM reembed_row_failures f WHERE f.migration = {name}"
        " AND f.row_key = to_jsonb({id}) AND f.text_md5 = md5({text})"
        " AND (f.parked OR f.retry_at > now()))"
    ).format(name=sql.Literal(m.name), id=id_sql, text=m.text_source.expression(row))


def record(
    conn: psycopg.Connection[Any],
    m: Migration,
    failed: Sequence[tuple[Any, str, BaseException]],
    options: RowFailureOptions,
) -> None:
    """Count one more failed attempt for each (row key, text md5, error); a new text starts
    at one. Parked at options.max_attempts."""
    for row_key, text_md5, exc in failed:
        conn.execute(
            "INSERT INTO reembed_row_failures AS f (migration, row_key, text_md5, attempts,"
            " error, parked, retry_at) VALUES (%(m)s, %(key)s, %(md5)s, 1, %(error)s,"
            " %(max)s <= 1, now() + make_interval(secs => %(delay)s))"
            " ON CONFLICT (migration, row_key) DO UPDATE SET"
            " attempts = CASE WHEN f.text_md5 = excluded.text_md5 THEN f.attempts + 1 ELSE 1 END,"
            " text_md5 = excluded.text_md5, error = excluded.error, last_failed_at = now(),"
            " parked = (CASE WHEN f.text_md5 = excluded.text_md5 THEN f.attempts + 1 ELSE 1 END)"
            " >= %(max)s,"
            " retry_at = now() + make_interval(secs => least(%(delay)s * power(2,"
            " CASE WHEN f.text_md5 = excluded.text_md5 THEN f.attempts ELSE 0 END), %(cap)s))",
            {
                "m": m.name,
                "key": Jsonb(row_key),
                "md5": text_md5,
                "error": describe(exc),
                "max": options.max_attempts,
                "delay": options.first_delay_s,
                "cap": MAX_ROW_RETRY_DELAY_S,
            },
        )


def clear(conn: psycopg.Connection[Any], m: Migration, row_keys: Sequence[Any]) -> None:
    """Forget the failures of rows that were written."""
    if row_keys:
        conn.execute(
            "DELETE FROM reembed_row_failures WHERE migration = %s AND row_key = ANY(%s)",
            (m.name, [Jsonb(k) for k in row_keys]),
        )


def counts(conn: psycopg.Connection[Any], name: str) -> tuple[int, int]:
    """Rows waiting for a retry, and rows parked."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE NOT parked), count(*) FILTER (WHERE parked)"
        " FROM reembed_row_failures WHERE migration = %s",
        (name,),
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def latest(conn: psycopg.Connection[Any], name: str, limit: int = SHOWN) -> list[RowFailure]:
    """The most recent failures, newest first."""
    rows = conn.execute(
        "SELECT row_key, attempts, parked, error, retry_at, last_failed_at"
        " FROM reembed_row_failures WHERE migration = %s ORDER BY last_failed_at DESC LIMIT %s",
        (name, limit),
    ).fetchall()
    return [RowFailure(*r) for r in rows]


def retry_parked(conn: psycopg.Connection[Any], name: str) -> int:
    """Give parked rows a fresh budget (after the table was fixed); returns how many."""
    cursor = conn.execute(
        "DELETE FROM reembed_row_failures WHERE migration = %s AND parked", (name,)
    )
    return cursor.rowcount
