"""The HNSW index build of a migration in the `index` phase, run by a maintenance thread in
each worker process (workers/background/index_maintenance.py), never by a step.

Building the index takes as long as the table is large (hours on big tables), and all that
time Postgres does the work while the client only waits. Running it in a step would hold the
worker's single Celery slot, and so the model's only GPU, away from live jobs for the whole
build. In a thread beside the Celery consumer it costs the worker nothing: batches and steps
keep flowing (steps keep embedding new rows meanwhile), and a per-migration advisory lock
makes one worker of the fleet build it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from migrations.reembed import attempts, ddl
from migrations.reembed.progress import record_counts
from migrations.reembed.state import load, set_fields

log = logging.getLogger(__name__)

BuildOutcome = Literal["built", "busy", "skipped", "retry", "failed"]


@dataclass(frozen=True)
class IndexOptions:
    """Memory for the build, and how many failed builds in a row fail the migration."""

    maintenance_work_mem: str
    max_attempts: int


def migrations_to_index(conn: psycopg.Connection[Any]) -> list[str]:
    """Running migrations waiting for their HNSW index, oldest first."""
    rows = conn.execute(
        "SELECT name FROM reembed_migrations WHERE status = 'running' AND phase = 'index'"
        " ORDER BY updated_at"
    ).fetchall()
    return [str(r[0]) for r in rows]


def build_index(conn: psycopg.Connection[Any], name: str, options: IndexOptions) -> BuildOutcome:
    """Build migration `name`'s HNSW index CONCURRENTLY, then move it to `following`. `conn`
    must be in autocommit mode (CREATE INDEX CONCURRENTLY cannot run in a transaction)."""
    # A session lock for the whole build: if this process dies, the lock goes with its
    # connection, and the next worker to look drops the invalid index and builds again.
    if not attempts.try_lock(conn, "index_attempts", name):
        return "busy"
    try:
        with conn.transaction():
            m = load(conn, name, lock=True)
            if m.status != "running" or m.phase != "index":
                return "skipped"
            if not attempts.begin_attempt(conn, m, "index_attempts", options.max_attempts):
                return "failed"
        try:
            conn.execute(
                "SELECT set_config('maintenance_work_mem', %s, false)",
                (options.maintenance_work_mem,),
            )
            ddl.drop_invalid_index(conn, m)
            conn.execute(ddl.hnsw_index_statement(m))
        except psycopg.Error as exc:
            if conn.closed or conn.broken:
                raise
            log.exception("HNSW index build of %s failed", name)
            failed, _ = attempts.record_failure(
                conn, name, "index_attempts", exc, options.max_attempts
            )
            return "failed" if failed else "retry"
        with conn.transaction():
            m = load(conn, name, lock=True)
            if m.phase == "index":
                # A step's error, if one is pending, stays visible; an index error is over.
                clear = {"error": None} if m.step_attempts == 0 else {}
                set_fields(conn, name, phase="following", index_attempts=0, **clear)
                record_counts(conn, m)
        log.info("HNSW index of %s built", name)
        return "built"
    finally:
        if not conn.closed and not conn.broken:
            attempts.unlock(conn, "index_attempts", name)
