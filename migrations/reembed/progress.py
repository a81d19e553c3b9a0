"""Progress figures of a migration, the same for the CLI, the API and Prometheus.

Reading them never scans the user's table (a dashboard polls status; on a table of 100M rows a
count per poll piles full scans on the product's database). Rows in all and rows without text
are counted by the migration itself, at start and at each phase change (above
EXACT_COUNT_MAX_ROWS, the planner's estimate), and served as of then. Pending rows come from
the partial index of pending rows (rows with text and no new vector: small once the keyset
pass is over); during the keyset pass, the rows ahead of its checkpoint are estimated from the
counts and the rows embedded so far. `exact=True` (`embedq reembed status --exact`) counts
everything now, at the cost of those scans.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from migrations.reembed import attempts, row_failures
from migrations.reembed.state import Migration, load, set_fields

RATE_WINDOW_S = 120
EXACT_COUNT_MAX_ROWS = 2_000_000


@dataclass(frozen=True)
class Progress:
    """Where a migration stands. rows_total = rows_done + rows_pending + rows_no_text, where
    rows without text (NULL, empty or whitespace) never get a vector (text_rule.py); rows_total
    and rows_no_text are as of counted_at, rows_pending is live (estimated during the keyset
    pass: pending_estimated)."""

    name: str
    table: str
    manifest_id: str
    status: str
    phase: str
    cut_over: bool
    rows_total: int
    rows_pending: int
    rows_done: int
    rows_no_text: int | None  # None: not counted on tables above EXACT_COUNT_MAX_ROWS
    counted_at: datetime | None
    pending_estimated: bool
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
    # 'migration' or 'vectorizer'; a vectorizer's lag: how long its oldest pending row has
    # waited (None: none waits), and rows the table refused, waiting for a retry or parked.
    kind: str = "migration"
    lag_s: float | None = None
    rows_retrying: int = 0
    rows_parked: int = 0
    # A chunking vectorizer: its table of windows and how texts are cut (None otherwise).
    chunk_table: str | None = None
    chunk_max_tokens: int | None = None
    chunk_overlap_tokens: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        figures = asdict(self)
        figures["counted_at"] = self.counted_at.isoformat() if self.counted_at else None
        return figures


def record_counts(conn: psycopg.Connection[Any], m: Migration) -> None:
    """Count the table's rows and rows without text (one scan, or the planner's estimate on a
    large table) and keep them as the migration's figures; at start and at phase changes."""
    total, without_text = _count_rows(conn, m)
    set_fields(conn, m.name, rows_total=total, rows_no_text=without_text)
    conn.execute("UPDATE reembed_migrations SET counted_at = now() WHERE name = %s", (m.name,))


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
            m.text_source.no_text(), m.table
        )
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _count(conn: psycopg.Connection[Any], m: Migration, *conditions: sql.Composable) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
            m.table, sql.SQL(" AND ").join([m.text_source.has_text(), *conditions])
        )
    ).fetchone()
    return int(row[0]) if row else 0


def _pending(conn: psycopg.Connection[Any], m: Migration, exact: bool) -> tuple[int, bool]:
    """Rows with text still to embed, and whether that is an estimate. Rows without a new
    vector are counted through the partial index of pending rows. The keyset pass rewrites
    every row with text, so it also has those ahead of its checkpoint: counted when `exact`,
    otherwise estimated from the counted rows with text less those the pass embedded."""
    null_new = sql.SQL("{} IS NULL").format(sql.Identifier(m.columns.pending))
    if m.phase != "keyset":
        return _count(conn, m, null_new), False
    if not exact:
        with_text = m.rows_total - (m.rows_no_text or 0)
        behind = sql.SQL("{} <= {}::{}").format(
            sql.Identifier(m.id_column), sql.Literal(m.checkpoint), m.id_type_sql
        )
        left_behind = _count(conn, m, null_new, behind) if m.checkpoint is not None else 0
        return max(with_text - m.rows_embedded, 0) + left_behind, True
    if m.checkpoint is None:
        return _count(conn, m), False
    ahead = sql.SQL("{} > {}::{}").format(
        sql.Identifier(m.id_column), sql.Literal(m.checkpoint), m.id_type_sql
    )
    behind = sql.SQL("{} <= {}::{}").format(
        sql.Identifier(m.id_column), sql.Literal(m.checkpoint), m.id_type_sql
    )
    return _count(conn, m, ahead) + _count(conn, m, null_new, behind), False


def progress(conn: psycopg.Connection[Any], name: str, exact: bool = False) -> Progress:
    """Rows done, pending and without text, recent rate, ETA, attempts and index progress;
    `exact` counts the table now (scans it) instead of serving the migration's counts."""
    m = load(conn, name)
    if exact:
        total, without_text = _count_rows(conn, m)
        counted_at = conn.execute("SELECT now()").fetchone()
        m_counted_at = counted_at[0] if counted_at else None
    else:
        total, without_text, m_counted_at = m.rows_total, m.rows_no_text, m.counted_at
    pending, estimated = _pending(conn, m, exact)
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
        (m.table_schema, m.chunks_relname or m.table_name),
    ).fetchone()
    if index is not None:
        index_phase, index_done = index[0], index[1]
    done = total - pending - (without_text or 0)
    failed = attempts.ended_without_success(conn, name)
    retrying, parked = row_failures.counts(conn, name)
    return Progress(
        name=m.name,
        table=m.display_name(conn),
        manifest_id=m.manifest_id,
        status=m.status,
        phase=m.phase,
        cut_over=m.cut_over,
        rows_total=total,
        rows_pending=pending,
        rows_done=max(done, 0),
        rows_no_text=without_text,
        counted_at=m_counted_at,
        pending_estimated=estimated,
        rows_embedded=m.rows_embedded,
        chunks_done=m.chunks_done,
        rate_rows_per_s=rate,
        eta_s=(pending / rate) if rate > 0 and pending else (0.0 if not pending else None),
        index_phase=index_phase,
        index_done_fraction=index_done,
        step_attempts=failed["step_attempts"],
        index_attempts=failed["index_attempts"],
        error=m.error,
        kind=m.kind,
        lag_s=lag_s(conn, m),
        rows_retrying=retrying,
        rows_parked=parked,
        chunk_table=None if m.chunk_table is None else m.chunk_table.as_string(conn),
        chunk_max_tokens=m.chunk_max_tokens,
        chunk_overlap_tokens=m.chunk_overlap_tokens,
    )


def lag_s(conn: psycopg.Connection[Any], m: Migration) -> float | None:
    """A vectorizer's lag: seconds since its oldest pending row began to wait (from the first
    entry of its queued index, no scan); None for a migration or when nothing waits."""
    if m.queued_column is None:
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT extract(epoch FROM now() - min({queued})) FROM {table}"
            " WHERE {pending} IS NULL AND {has_text}"
        ).format(
            queued=sql.Identifier(m.queued_column),
            table=m.table,
            pending=sql.Identifier(m.columns.pending),
            has_text=m.text_source.has_text(),
        )
    ).fetchone()
    return None if row is None or row[0] is None else max(float(row[0]), 0.0)


def list_migrations(conn: psycopg.Connection[Any], kind: str = "migration") -> list[str]:
    """Names of all migrations (or of all vectorizers)."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT name FROM reembed_migrations WHERE kind = %s ORDER BY name", (kind,)
        )
    ]


# Pending rows a metrics refresh counts at most (through the partial index): a bulk load of
# millions would otherwise make every refresh walk all of them.
PENDING_COUNT_CAP = 1_000_000


def pending_capped(
    conn: psycopg.Connection[Any], m: Migration, cap: int = PENDING_COUNT_CAP
) -> int:
    """Rows with text and no vector, counted through the pending-rows index up to `cap`."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {pending} IS NULL AND {has_text}"
            " LIMIT {cap}) p"
        ).format(
            table=m.table,
            pending=sql.Identifier(m.columns.pending),
            has_text=m.text_source.has_text(),
            cap=sql.Literal(cap),
        )
    ).fetchone()
    return int(row[0]) if row else 0
