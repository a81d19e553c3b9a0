"""Operator actions on a migration: start, pause, resume, cutover, rollback, finalize (and giving
up a vectorizer's model change)."""

from __future__ import annotations

from typing import Any

import psycopg
from celery import Celery
from psycopg import sql

from embedq_core.queueing import REEMBED_STEP_TASK, reembed_queue
from migrations.reembed import ddl, model_change
from migrations.reembed.backfill import new_step_token
from migrations.reembed.locking import LockPolicy, limit_lock_wait, with_lock_retries
from migrations.reembed.progress import record_counts
from migrations.reembed.state import Migration, load, set_fields


class MigrationStateError(RuntimeError):
    """The action does not fit the migration's current state."""


def send_step(celery: Celery, m: Migration, token: str, countdown_s: float = 0.0) -> None:
    """Queue the next step on the model's low-priority re-embedding queue."""
    celery.send_task(
        REEMBED_STEP_TASK,
        args=[m.name, token],
        queue=reembed_queue(m.manifest_id),
        countdown=countdown_s or None,
    )


def start(
    conn: psycopg.Connection[Any], draft: Migration, celery: Celery, policy: LockPolicy
) -> Migration:
    """Record the migration, add the columns and trigger, then queue the first step."""

    def attempt() -> None:
        with conn.transaction():
            existing = conn.execute(
                "SELECT status FROM reembed_migrations WHERE name = %s", (draft.name,)
            ).fetchone()
            if existing is not None:
                raise MigrationStateError(
                    f"migration {draft.name!r} exists ({existing[0]}); use resume"
                )
            # Checked again here: the table may have changed since the draft was made.
            ddl.check_new_columns(draft, ddl.existing_column_types(conn, draft))
            _insert(conn, draft)
            limit_lock_wait(conn, policy)
            for statement in ddl.start_statements(draft):
                conn.execute(statement)

    with_lock_retries(conn, draft.table, "start", policy, attempt)
    # CONCURRENTLY: outside a transaction, and with no lock_timeout (see locking.py).
    ddl.ensure_pending_index(conn, draft)
    with conn.transaction():
        record_counts(conn, draft)
        token = new_step_token(conn, draft.name)
    m = load(conn, draft.name)
    send_step(celery, m, token)
    return m


def _insert(conn: psycopg.Connection[Any], draft: Migration) -> None:
    conn.execute(
        "INSERT INTO reembed_migrations (name, table_schema, table_name, id_column, id_type,"
        " text_column, legacy_column, new_column, manifest_id, dimension, chunk_size,"
        " kind, text_columns, text_template, vectorizer, sparse_dimension, chunk_max_tokens,"
        " chunk_overlap_tokens, status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s, %s, %s, %s, %s, %s, 'running')",
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
            draft.kind,
            draft.text_columns,
            draft.text_template,
            draft.vectorizer,
            draft.sparse_dimension,
            draft.chunk_max_tokens,
            draft.chunk_overlap_tokens,
        ),
    )


def refuse_vectorizer(m: Migration, action: str) -> None:
    """Cutover, rollback and finalize belong to migrations: a vectorizer's column is live from
    the start and follows for good."""
    if m.is_vectorizer:
        raise MigrationStateError(
            f"{m.name} is a vectorizer: it has no {action}; `embedq vectorize drop` removes it"
        )


def pause(conn: psycopg.Connection[Any], name: str) -> None:
    """Stop after the current chunk (the running step finishes and sends no next one)."""
    with conn.transaction():
        m = load(conn, name, lock=True)
        if m.status != "running":
            raise MigrationStateError(f"{name} is {m.status}, not running")
        set_fields(conn, name, status="paused")


def resume(conn: psycopg.Connection[Any], name: str, celery: Celery) -> None:
    """Continue from the checkpoint (also after a failure, with a fresh attempt budget)."""

    def resumable() -> Migration:
        m = load(conn, name, lock=True)
        if m.status not in ("paused", "failed", "running"):
            raise MigrationStateError(f"{name} is {m.status}; only paused or failed resume")
        return m

    with conn.transaction():
        m = resumable()
    # A start interrupted before or while its pending-rows index was built left it missing or
    # invalid: built first (CONCURRENTLY, outside a transaction), before any step runs again.
    ddl.ensure_pending_index(conn, m)
    with conn.transaction():
        m = resumable()
        set_fields(conn, name, status="running", error=None, step_attempts=0, index_attempts=0)
        token = new_step_token(conn, name)
    send_step(celery, m, token)


def _swap(
    conn: psycopg.Connection[Any], name: str, to_cut_over: bool, force: bool, policy: LockPolicy
) -> None:
    action = "cutover" if to_cut_over else "rollback"

    def attempt() -> None:
        with conn.transaction():
            # The migration's row lock first, with no timeout: waiting for a step's chunk
            # to commit holds up nothing of the product's.
            m = load(conn, name, lock=True)
            refuse_vectorizer(m, action)
            if m.status == "finalized":
                raise MigrationStateError(f"{name} is finalized")
            if m.cut_over == to_cut_over:
                raise MigrationStateError(
                    f"{name} is already {'cut over' if to_cut_over else 'on legacy'}"
                )
            if to_cut_over and not force:
                _check_ready(conn, m)
            vectorizer = model_change.lock_vectorizer(conn, m)
            # A brief ACCESS EXCLUSIVE lock; readers wait for it (at most the lock timeout
            # while it is not granted), then see one state or the other.
            limit_lock_wait(conn, policy)
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(m.table))
            for statement in model_change.swap_statements(m, vectorizer, to_cut_over):
                conn.execute(statement)
            set_fields(conn, name, cut_over=to_cut_over)
            if vectorizer is not None:
                model_change.record_swap(conn, m, vectorizer, to_cut_over)

    with_lock_retries(conn, load(conn, name).table, action, policy, attempt)


def pending_rows(conn: psycopg.Connection[Any], m: Migration) -> int:
    """Rows with text but no new vector (rows without text never get one, by the same rule
    the backfill, status and verify use)."""
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL AND {}").format(
            m.table, sql.Identifier(m.columns.pending), m.text_source.has_text()
        )
    ).fetchone()
    return int(row[0]) if row else 0


def _check_ready(conn: psycopg.Connection[Any], m: Migration) -> None:
    if m.phase not in ("following",):
        raise MigrationStateError(
            f"{m.name} is in phase {m.phase}: cut over after the backfill and index (or --force)"
        )
    # Under steady writes a few just-inserted rows always wait for the next step; up to one
    # chunk of them is normal, and the following phase embeds them right after the cutover.
    pending = pending_rows(conn, m)
    if pending > m.chunk_size:
        raise MigrationStateError(
            f"{pending} rows with text still lack a new vector (more than one chunk,"
            f" {m.chunk_size}): wait until status shows fewer, or --force"
        )


def cutover(
    conn: psycopg.Connection[Any], name: str, policy: LockPolicy, force: bool = False
) -> None:
    """Readers' column name now holds the new vectors; the legacy ones move aside."""
    _swap(conn, name, to_cut_over=True, force=force, policy=policy)


def rollback(conn: psycopg.Connection[Any], name: str, policy: LockPolicy) -> None:
    """Give the column name back to the legacy vectors."""
    _swap(conn, name, to_cut_over=False, force=True, policy=policy)


def finalize(conn: psycopg.Connection[Any], name: str, policy: LockPolicy, celery: Celery) -> None:
    """Drop the legacy column and the migration's trigger; only after cutover. A vectorizer's
    model change hands the column to the vectorizer instead, which follows it from then on
    with the new model (its next step goes to that model's workers)."""

    def attempt() -> tuple[Migration, str | None] | None:
        with conn.transaction():
            m = load(conn, name, lock=True)
            refuse_vectorizer(m, "finalize")
            if not m.cut_over:
                raise MigrationStateError(
                    f"{name} is not cut over: finalize would drop live vectors"
                )
            vectorizer = model_change.lock_vectorizer(conn, m)
            limit_lock_wait(conn, policy)
            if vectorizer is None:
                statements = ddl.finalize_statements(m)
            else:
                statements = model_change.handover_statements(m, vectorizer)
            for statement in statements:
                conn.execute(statement)
            set_fields(conn, name, status="finalized")
            if vectorizer is None:
                return None
            handed = model_change.record_handover(conn, m, vectorizer)
            # Steps of the old model still queued end as stale; the chain goes on from here.
            running = handed.status == "running"
            return handed, new_step_token(conn, handed.name) if running else None

    handed = with_lock_retries(conn, load(conn, name).table, "finalize", policy, attempt)
    if handed is not None:
        vectorizer, token = handed
        with conn.transaction():  # counted after the DDL's lock is gone: readers wait for none
            record_counts(conn, vectorizer)
        ddl.ensure_pending_index(conn, vectorizer)  # its queued index went with the old column
        if token is not None:
            send_step(celery, load(conn, vectorizer.name), token)


def abandon_model_change(conn: psycopg.Connection[Any], name: str, policy: LockPolicy) -> None:
    """Give up a vectorizer's model change that is not cut over: its column and trigger are
    dropped and its record deleted; the vectorizer goes on with its model."""

    def attempt() -> None:
        with conn.transaction():
            m = load(conn, name, lock=True)
            model_change.check_abandonable(m)
            limit_lock_wait(conn, policy)
            for statement in model_change.abandon_statements(m):
                conn.execute(statement)
            # Its queued steps find no record and end.
            conn.execute("DELETE FROM reembed_migrations WHERE name = %s", (name,))

    with_lock_retries(conn, load(conn, name).table, "abandon", policy, attempt)
