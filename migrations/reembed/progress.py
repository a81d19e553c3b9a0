"""Progress figures of a migration, the same for the CLI, the API and Prometheus."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from migrations.reembed import attempts
from migrations.reembed.state import Migration, load
from migrations.reembed.text_rule import has_text, no_text

RATE_WINDOW_S = 120
EXACT_COUNT_MAX_ROWS = 2_000_000


@dataclass(frozen=True)
class Progress:
    """Where a migration stands. rows_total = rows_done + rows_pending + rows_no_text, where
    rows without text (NULL, empty or whitespace) never get a vector (text_rule.py)."""

    name: str
    table: str
    status: str
    phase: str
    cut_over: bool
    rows_total: int
    rows_pending: int
    rows_done: int
    rows_no_text: int | None  # None: not counted on tables above EXACT_COUNT_MAX_ROWS
    rows_embedded: int
    chunks_done: int
    rate_rows_per_s: float
    eta_s: float | None
    index_phase: str | None
    index_done_fraction: float | None
    # Attempts in a row that failed or whose worker died; one in progress is not counted.
    step_attempts: int
    index_attempts: int
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _count_rows(conn: psycopg.Connection[Any], m: Migration) -> tuple[int, int | None]:
    """All rows, and rows without text (one scan), or the planner's estimate and None."""
    estimate = conn.execute(
        "SELECT reltuples::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (m.table_schema, m.table_name),
    ).fetchone()
    if estimate is not None and estimate[0] > EXACT_COUNT_MAX_ROWS:
        return int(estimate[0]), None  # counting a huge table on every status call costs too much
    row = conn.execute(
        sql.SQL("SELECT count(*), count(*) FILTER (WHERE {}) FROM {}").format(
            no_text(m.text_column), m.table
        )
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _count(conn: psycopg.Connection[Any], m: Migration, *conditions: sql.Composable) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
            m.table, sql.SQL(" AND ").join([has_text(m.text_column), *conditions])
        )
    ).fetchone()
    return int(row[0]) if row else 0


def _pending(conn: psycopg.Connection[Any], m: Migration) -> int:
    """Rows with text still to embed: those without a new vector (the partial index of
    pending rows answers that), and in the keyset pass, which rewrites every row with text,
    also those ahead of the checkpoint (a range of the primary key)."""
    null_new = sql.SQL("{} IS NULL").format(sql.Identifier(m.columns.new))
    if m.phase != "keyset":
        return _count(conn, m, null_new)
    if m.checkpoint is None:
        return _count(conn, m)
    ahead = sql.SQL("{} > {}::{}").format(
        sql.Identifier(m.id_column), sql.Literal(m.checkpoint), m.id_type_sql
    )
    behind = sql.SQL("{} <= {}::{}").format(
        sql.Identifier(m.id_column), sql.Literal(m.checkpoint), m.id_type_sql
    )
    return _count(conn, m, ahead) + _count(conn, m, null_new, behind)


def progress(conn: psycopg.Connection[Any], name: str) -> Progress:
    """Rows done, pending and without text, recent rate, ETA, attempts and index progress."""
    m = load(conn, name)
    total, without_text = _count_rows(conn, m)
    pending = _pending(conn, m)
    recent = conn.execute(
        "SELECT coalesce(sum(rows_read), 0), min(finished_at), max(finished_at),"
        " coalesce(sum(seconds), 0) FROM reembed_chunks"
        " WHERE migration = %s AND finished_at > now() - make_interval(secs => %s)",
        (name, RATE_WINDOW_S),
    ).fetchone()
    rate = 0.0
    if recent and recent[0] and recent[1] is not None and recent[2] is not None:
        span_s = (recent[2] - recent[1]).total_seconds()
        # Over one chunk, time spent in it; over several, wall time between their ends.
        rate = float(recent[0]) / max(span_s if span_s > 0 else float(recent[3]), 1e-3)
    index_phase, index_done = None, None
    index = conn.execute(
        "SELECT p.phase, CASE WHEN p.blocks_total > 0"
        " THEN p.blocks_done::float / p.blocks_total END"
        " FROM pg_stat_progress_create_index p JOIN pg_class c ON c.oid = p.relid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (m.table_schema, m.table_name),
    ).fetchone()
    if index is not None:
        index_phase, index_done = index[0], index[1]
    done = total - pending - (without_text or 0)
    failed = attempts.ended_without_success(conn, name)
    return Progress(
        name=m.name,
        table=m.display_name(conn),
        status=m.status,
        phase=m.phase,
        cut_over=m.cut_over,
        rows_total=total,
        rows_pending=pending,
        rows_done=max(done, 0),
        rows_no_text=without_text,
        rows_embedded=m.rows_embedded,
        chunks_done=m.chunks_done,
        rate_rows_per_s=rate,
        eta_s=(pending / rate) if rate > 0 and pending else (0.0 if not pending else None),
        index_phase=index_phase,
        index_done_fraction=index_done,
        step_attempts=failed["step_attempts"],
        index_attempts=failed["index_attempts"],
        error=m.error,
    )


def list_migrations(conn: psycopg.Connection[Any]) -> list[str]:
    """Names of all migrations."""
    return [r[0] for r in conn.execute("SELECT name FROM reembed_migrations ORDER BY name")]
