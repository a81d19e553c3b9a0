"""Operator actions on a migration: plan, start, pause, resume, cutover, rollback, finalize."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from celery import Celery
from psycopg import sql

from embedq_core.manifest import ModelManifest
from embedq_core.queueing import REEMBED_STEP_TASK, reembed_queue
from migrations.reembed import ddl
from migrations.reembed.backfill import new_step_token
from migrations.reembed.state import Migration, load, planned_names, set_fields
from migrations.reembed.target import Target, TargetError, check_migration_name

SAMPLE_ROWS = 256


class MigrationStateError(RuntimeError):
    """The action does not fit the migration's current state."""


@dataclass(frozen=True)
class Plan:
    """What `start` would do, and how long the backfill should take."""

    migration: Migration
    rows: int
    sample_rows: int
    sample_rows_per_s: float
    estimated_s: float
    statements: list[str]


def draft_migration(
    target: Target, name: str, new_column: str, manifest: ModelManifest, chunk_size: int
) -> Migration:
    """The migration start would record, after checking its names are free."""
    clashes = [c for c in planned_names(target, new_column) if c in target.columns]
    if clashes and new_column not in target.columns:
        raise TargetError(f"{target.table} already has column(s) {clashes}: pick --new-column")
    return Migration(
        name=check_migration_name(name),
        table_schema=target.schema,
        table_name=target.table,
        id_column=target.id_column,
        id_type=target.id_type,
        text_column=target.text_column,
        legacy_column=target.legacy_column,
        new_column=new_column,
        manifest_id=manifest.manifest_id,
        dimension=manifest.dimension,
        chunk_size=chunk_size,
        status="planned",
        phase="keyset",
        checkpoint=None,
        cut_over=False,
        rows_total=0,
        rows_embedded=0,
        chunks_done=0,
        step_token=None,
        error=None,
    )


def plan(
    conn: psycopg.Connection[Any],
    target: Target,
    name: str,
    new_column: str,
    manifest: ModelManifest,
    chunk_size: int,
    embed: Callable[[list[str]], npt.NDArray[np.float32]],
) -> Plan:
    """Count rows, time the engine on a sample of them, and list the DDL start will run."""
    draft = draft_migration(target, name, new_column, manifest, chunk_size)
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target.qualified)).fetchone()
    rows = int(count[0]) if count else 0
    sample = [
        r[0]
        for r in conn.execute(
            sql.SQL("SELECT {} FROM {} WHERE {} IS NOT NULL LIMIT {}").format(
                sql.Identifier(target.text_column),
                target.qualified,
                sql.Identifier(target.text_column),
                sql.Literal(SAMPLE_ROWS),
            )
        ).fetchall()
    ]
    rate = 0.0
    if sample:
        embed(sample[:8])  # warm-up
        started = time.perf_counter()
        vectors = embed(sample)
        rate = len(vectors) / (time.perf_counter() - started)
    statements = [s.as_string(conn) for s in ddl.start_statements(draft)]
    statements += [
        ddl.pending_index_statement(draft).as_string(conn),
        ddl.hnsw_index_statement(draft).as_string(conn) + "  -- after the backfill",
    ]
    return Plan(draft, rows, len(sample), rate, rows / rate if rate else float("inf"), statements)


def send_step(celery: Celery, m: Migration, token: str, countdown_s: float = 0.0) -> None:
    """Queue the next step on the model's low-priority re-embedding queue."""
    celery.send_task(
        REEMBED_STEP_TASK,
        args=[m.name, token],
        queue=reembed_queue(m.manifest_id),
        countdown=countdown_s or None,
    )


def start(conn: psycopg.Connection[Any], draft: Migration, celery: Celery) -> Migration:
    """Record the migration, add the columns and trigger, then queue the first step."""
    with conn.transaction():
        existing = conn.execute(
            "SELECT status FROM reembed_migrations WHERE name = %s", (draft.name,)
        ).fetchone()
        if existing is not None:
            raise MigrationStateError(
                f"migration {draft.name!r} exists ({existing[0]}); use resume"
            )
        conn.execute(
            "INSERT INTO reembed_migrations (name, table_schema, table_name, id_column, id_type,"
            " text_column, legacy_column, new_column, manifest_id, dimension, chunk_size,"
            " status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'running')",
            (
                draft.name,
                draft.table_schema,
                draft.table_name,
                draft.id_column,
                draft.id_type,
                draft.text_column,
                draft.legacy_column,
                draft.new_column,
                draft.manifest_id,
                draft.dimension,
                draft.chunk_size,
            ),
        )
        for statement in ddl.start_statements(draft):
            conn.execute(statement)
    conn.execute(ddl.pending_index_statement(draft))  # CONCURRENTLY: outside a transaction
    with conn.transaction():
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(draft.table)).fetchone()
        set_fields(conn, draft.name, rows_total=int(count[0]) if count else 0)
        token = new_step_token(conn, draft.name)
    m = load(conn, draft.name)
    send_step(celery, m, token)
    return m


def pause(conn: psycopg.Connection[Any], name: str) -> None:
    """Stop after the current chunk (the running step finishes and sends no next one)."""
    with conn.transaction():
        m = load(conn, name, lock=True)
        if m.status != "running":
            raise MigrationStateError(f"{name} is {m.status}, not running")
        set_fields(conn, name, status="paused")


def resume(conn: psycopg.Connection[Any], name: str, celery: Celery) -> None:
    """Continue from the checkpoint (also after a failure)."""
    with conn.transaction():
        m = load(conn, name, lock=True)
        if m.status not in ("paused", "failed", "running"):
            raise MigrationStateError(f"{name} is {m.status}; only paused or failed resume")
        set_fields(conn, name, status="running", error=None)
        token = new_step_token(conn, name)
    send_step(celery, m, token)


def _swap(conn: psycopg.Connection[Any], name: str, to_cut_over: bool, force: bool) -> None:
    with conn.transaction():
        m = load(conn, name, lock=True)
        if m.status == "finalized":
            raise MigrationStateError(f"{name} is finalized")
        if m.cut_over == to_cut_over:
            raise MigrationStateError(
                f"{name} is already {'cut over' if to_cut_over else 'on legacy'}"
            )
        if to_cut_over and not force:
            _check_ready(conn, m)
        # Brief ACCESS EXCLUSIVE lock; readers wait for it, then see one state or the other.
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(m.table))
        for statement in ddl.swap_statements(m, to_cut_over):
            conn.execute(statement)
        set_fields(conn, name, cut_over=to_cut_over)


def _check_ready(conn: psycopg.Connection[Any], m: Migration) -> None:
    if m.phase not in ("following",):
        raise MigrationStateError(
            f"{m.name} is in phase {m.phase}: cut over after the backfill and index (or --force)"
        )
    pending = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL AND {} IS NOT NULL").format(
            m.table, sql.Identifier(m.columns.new), sql.Identifier(m.text_column)
        )
    ).fetchone()
    if pending and pending[0] > 0:
        raise MigrationStateError(f"{pending[0]} rows still lack a new vector (or --force)")


def cutover(conn: psycopg.Connection[Any], name: str, force: bool = False) -> None:
    """Readers' column name now holds the new vectors; the legacy ones move aside."""
    _swap(conn, name, to_cut_over=True, force=force)


def rollback(conn: psycopg.Connection[Any], name: str) -> None:
    """Give the column name back to the legacy vectors."""
    _swap(conn, name, to_cut_over=False, force=True)


def finalize(conn: psycopg.Connection[Any], name: str) -> None:
    """Drop the legacy column and the migration's trigger; only after cutover."""
    with conn.transaction():
        m = load(conn, name, lock=True)
        if not m.cut_over:
            raise MigrationStateError(f"{name} is not cut over: finalize would drop live vectors")
        for statement in ddl.finalize_statements(m):
            conn.execute(statement)
        set_fields(conn, name, status="finalized")
