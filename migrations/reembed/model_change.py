"""Changing a vectorizer's model: a re-embedding migration of the vectorizer's own column.

`embedq vectorize change-model` records an ordinary migration (new column, backfill, catch-up,
index, following; then verify, cutover, rollback, finalize) whose legacy column is the
vectorizer's and whose text is the vectorizer's text; its `vectorizer` field links the two.
Until finalize both follow the table: the vectorizer keeps its column fresh with the old model
(so readers, and a rollback, never see stale vectors), the migration fills the new column with
the new model. What the link adds, each in the same transaction as the migration's own DDL:

- cutover moves the vectorizer aside with the legacy vectors (`<vector>_legacy`, its manifest
  and queued columns renamed, its trigger function re-pointed), where it keeps following;
- rollback moves it back;
- finalize hands over: the migration's trigger and the old columns are dropped, the migration's
  pending-rows and HNSW indexes take the vectorizer's names, and the vectorizer's record takes
  the new model and dimension, so from then on the vectorizer's own steps follow the column
  with the new model, on the new model's workers. One code path follows, before and after.

Lock order everywhere: the migration's row, then the vectorizer's row, then the table (a
vectorizer step takes its row, then the table), so an operator action never deadlocks a step.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import psycopg
from psycopg import sql

from embedq_core.manifest import ModelManifest
from migrations.reembed import ddl
from migrations.reembed.state import Migration, load, sparse_dimension
from migrations.reembed.target import TargetError, check_identifier_length, check_migration_name


class ModelChangeError(RuntimeError):
    """The vectorizer cannot start (or end) a model change in its current state."""


def in_flight(conn: psycopg.Connection[Any], vectorizer: str) -> str | None:
    """The name of the vectorizer's unfinished model change, if there is one."""
    row = conn.execute(
        "SELECT name FROM reembed_migrations WHERE vectorizer = %s AND status <> 'finalized'"
        " ORDER BY created_at LIMIT 1",
        (vectorizer,),
    ).fetchone()
    return None if row is None else str(row[0])


def default_name(conn: psycopg.Connection[Any], vectorizer: str) -> str:
    """`<vectorizer>_change<N>`, N one more than its earlier changes."""
    row = conn.execute(
        "SELECT count(*) FROM reembed_migrations WHERE vectorizer = %s", (vectorizer,)
    ).fetchone()
    return f"{vectorizer[:30]}_change{int(row[0]) + 1 if row else 1}"


def aside(m: Migration) -> str:
    """Where the legacy vectors (and the vectorizer with them) live after cutover."""
    return replace(m, cut_over=True).columns.legacy


def moved(v: Migration, column: str, **changes: Any) -> Migration:
    """The vectorizer following `column` (its manifest and queued columns named after it)."""
    return replace(v, new_column=column, legacy_column=column, **changes)


def draft_model_change(
    conn: psycopg.Connection[Any],
    v: Migration,
    name: str,
    new_column: str,
    manifest: ModelManifest,
    chunk_size: int,
) -> Migration:
    """The migration `change-model` would start: the vectorizer's column is its legacy column,
    `new_column` (free, as is every name cutover will use) receives the new model's vectors."""
    if not v.is_vectorizer:
        raise ModelChangeError(f"{v.name} is a re-embedding migration, not a vectorizer")
    if v.chunking is not None:
        # Its windows live in a table of their own, which the column renames of cutover and
        # rollback do not move.
        raise ModelChangeError(
            f"{v.name} cuts rows into windows: its model is changed by dropping it and adding a"
            " new one (`embedq vectorize drop`, then `add`), not by a migration"
        )
    running = in_flight(conn, v.name)
    if running is not None:
        raise ModelChangeError(f"{v.name} already has a model change in progress: {running}")
    if v.phase != "following":
        raise ModelChangeError(
            f"{v.name} is in phase {v.phase}: change its model once its backfill and index are"
            " done (status shows the phase)"
        )
    if manifest.manifest_id == v.manifest_id:
        raise TargetError(f"{v.name} already embeds with {manifest.manifest_id}")
    draft = Migration(
        name=check_migration_name(name),
        table_schema=v.table_schema,
        table_name=v.table_name,
        id_column=v.id_column,
        id_type=v.id_type,
        text_column=v.text_column,
        legacy_column=v.new_column,
        new_column=new_column,
        manifest_id=manifest.manifest_id,
        dimension=manifest.dimension,
        chunk_size=chunk_size,
        sparse_dimension=sparse_dimension(manifest),
        text_columns=v.text_columns,
        text_template=v.text_template,
        vectorizer=v.name,
    )
    away = moved(v, aside(draft))
    needed = [
        new_column,
        draft.columns.manifest,
        away.columns.new,
        away.columns.manifest,
        away.queued_column or "",
        *(c for c in (draft.columns.sparse, away.columns.sparse) if c is not None),
    ]
    cut = replace(draft, cut_over=True).columns.sparse
    if cut is not None and v.columns.sparse is None:  # the weights will take the binding's name
        needed.append(cut)
    existing = ddl.existing_column_types(conn, draft)
    for column in needed:
        check_identifier_length("derived column name", column)
        if column in existing:
            raise TargetError(
                f"{v.display_name(conn)} already has a column {column}: pick another --new-column"
                " (or rename that column)"
            )
    return draft


def lock_vectorizer(conn: psycopg.Connection[Any], m: Migration) -> Migration | None:
    """The vectorizer a migration changes, its row locked (None: an ordinary migration). Taken
    before the table's lock: see the lock order above."""
    return None if m.vectorizer is None else load(conn, m.vectorizer, lock=True)


def swap_statements(m: Migration, v: Migration | None, to_cut_over: bool) -> list[sql.Composed]:
    """The migration's cutover or rollback renames, with the vectorizer's columns moved aside
    first (cutover: the new manifest column takes its name) or back after (rollback)."""
    core = ddl.swap_statements(m, to_cut_over)
    if v is None:
        return core
    target = moved(v, aside(m) if to_cut_over else m.legacy_column)
    pairs = [
        (v.columns.manifest, target.columns.manifest),
        (v.queued_column, target.queued_column),
        (v.columns.sparse, target.columns.sparse),
    ]
    renames = [ddl.rename_column(m, a, b) for a, b in pairs if a is not None and b is not None]
    function = ddl.dirty_function(target, target.columns)
    return [*renames, *core, function] if to_cut_over else [*core, *renames, function]


def record_swap(conn: psycopg.Connection[Any], m: Migration, v: Migration, cut_over: bool) -> None:
    """The vectorizer's record follows its columns."""
    column = aside(m) if cut_over else m.legacy_column
    conn.execute(
        "UPDATE reembed_migrations SET new_column = %s, legacy_column = %s, updated_at = now()"
        " WHERE name = %s",
        (column, column, v.name),
    )


def handover_statements(m: Migration, v: Migration) -> list[sql.Composed]:
    """Finalize of a model change: the vectorizer takes over the cut-over column with the new
    model. Its old indexes go with the old columns; the migration's pending-rows and HNSW
    indexes (the same predicate, on the new vectors) take the vectorizer's names."""
    mn, vn = ddl.object_names(m), ddl.object_names(v)
    after = moved(v, m.legacy_column)
    statements = [
        sql.SQL("DROP TRIGGER IF EXISTS {trigger} ON {table}").format(**mn),
        sql.SQL("DROP FUNCTION IF EXISTS {function}()").format(**mn),
        *(
            sql.SQL("DROP INDEX IF EXISTS {}").format(vn[f"{kind}_index_q"])
            for kind in ("pending", "queued", "hnsw")
        ),
        _drop_columns(m, v.columns.new, v.columns.manifest, v.columns.sparse),
        ddl.rename_column(m, v.queued_column or "", after.queued_column or ""),
        *(
            sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {}").format(
                mn[f"{kind}_index_q"], vn[f"{kind}_index"]
            )
            for kind in ("pending", "hnsw")
        ),
        ddl.dirty_function(after, after.columns),
    ]
    return statements


def record_handover(conn: psycopg.Connection[Any], m: Migration, v: Migration) -> Migration:
    """The vectorizer's record takes the column, model and dimensions; returns it as now."""
    column = m.legacy_column
    conn.execute(
        "UPDATE reembed_migrations SET new_column = %s, legacy_column = %s, manifest_id = %s,"
        " dimension = %s, sparse_dimension = %s, error = NULL, step_attempts = 0,"
        " updated_at = now() WHERE name = %s",
        (column, column, m.manifest_id, m.dimension, m.sparse_dimension, v.name),
    )
    return load(conn, v.name)


def abandon_statements(m: Migration) -> list[sql.Composed]:
    """A model change given up before cutover (or after a rollback): the migration's trigger,
    function, indexes and columns go; the vectorizer, which never stopped following, stays."""
    n, cols = ddl.object_names(m), m.columns
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {trigger} ON {table}").format(**n),
        sql.SQL("DROP FUNCTION IF EXISTS {function}()").format(**n),
        sql.SQL("DROP INDEX IF EXISTS {pending_index_q}").format(**n),
        sql.SQL("DROP INDEX IF EXISTS {hnsw_index_q}").format(**n),
        _drop_columns(m, cols.new, cols.manifest, cols.sparse),
    ]


def _drop_columns(m: Migration, *columns: str | None) -> sql.Composed:
    drops = [sql.SQL("DROP COLUMN IF EXISTS {}").format(sql.Identifier(c)) for c in columns if c]
    return sql.SQL("ALTER TABLE {} {}").format(m.table, sql.SQL(", ").join(drops))


def check_abandonable(m: Migration) -> None:
    """Only an unfinished change whose vectors readers are not reading can be given up."""
    if m.vectorizer is None:
        raise ModelChangeError(f"{m.name} is not a vectorizer's model change")
    if m.status == "finalized":
        raise ModelChangeError(f"{m.name} is finalized: the vectorizer already uses its model")
    if m.cut_over:
        raise ModelChangeError(
            f"{m.name} is cut over: roll it back first (embedq reembed rollback)"
        )
