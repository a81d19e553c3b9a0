"""Progress figures of a migration, the same for the CLI, the API and Prometheus."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from migrations.reembed.state import Migration, load

RATE_WINDOW_S = 120
EXACT_COUNT_MAX_ROWS = 2_000_000


@dataclass(frozen=True)
class Progress:
    """Where a migration stands."""

    name: str
    table: str
    status: str
    phase: str
    cut_over: bool
    rows_total: int
    rows_pending: int
    rows_done: int
    rows_embedded: int
    chunks_done: int
    rate_rows_per_s: float
    eta_s: float | None
    index_phase: str | None
    index_done_fraction: float | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _count_rows(conn: psycopg.Connection[Any], m: Migration) -> int:
    estimate = conn.execute(
        "SELECT reltuples::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (m.table_schema, m.table_name),
    ).fetchone()
    if estimate is not None and estimate[0] > EXACT_COUNT_MAX_ROWS:
        return int(estimate[0])  # counting a huge table on every status call costs too much
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(m.table)).fetchone()
    return int(row[0]) if row else 0


def progress(conn: psycopg.Connection[Any], name: str) -> Progress:
    """Rows done and pending, recent rate, ETA and index build progress."""
    m = load(conn, name)
    total = _count_rows(conn, m)
    pending_row = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM {} WHERE {} IS NULL AND {} IS NOT NULL AND btrim({}) <> ''"
        ).format(
            m.table,
            sql.Identifier(m.columns.new),
            sql.Identifier(m.text_column),
            sql.Identifier(m.text_column),
        )
    ).fetchone()
    pending = int(pending_row[0]) if pending_row else 0
    if m.phase == "keyset" and m.checkpoint is not None:
        # The keyset pass rewrites every row; rows ahead of the checkpoint are still to do.
        ahead = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {} > {}::{}").format(
                m.table, sql.Identifier(m.id_column), sql.Literal(m.checkpoint), m.id_type_sql
            )
        ).fetchone()
        pending = max(pending, int(ahead[0]) if ahead else 0)
    elif m.phase == "keyset":
        pending = total
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
    return Progress(
        name=m.name,
        table=f"{m.table_schema}.{m.table_name}",
        status=m.status,
        phase=m.phase,
        cut_over=m.cut_over,
        rows_total=total,
        rows_pending=pending,
        rows_done=max(total - pending, 0),
        rows_embedded=m.rows_embedded,
        chunks_done=m.chunks_done,
        rate_rows_per_s=rate,
        eta_s=(pending / rate) if rate > 0 and pending else (0.0 if not pending else None),
        index_phase=index_phase,
        index_done_fraction=index_done,
        error=m.error,
    )


def list_migrations(conn: psycopg.Connection[Any]) -> list[str]:
    """Names of all migrations."""
    return [r[0] for r in conn.execute("SELECT name FROM reembed_migrations ORDER BY name")]
