"""The DDL a migration runs on the user's table, built from validated identifiers only.

Why a new column on the same table rather than a shadow table: cutover is then a rename in
one transaction, after which readers' existing SQL (`ORDER BY embedding <#> $1`) reads the new
vectors with no change but the query vector they send; rollback is the reverse rename. The
costs, stated in the runbook: each row is rewritten once (table bloat until VACUUM, WAL, and
the table's own UPDATE triggers fire), and a trigger marks rows whose text changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import psycopg
from psycopg import sql

from migrations.reembed.state import Columns, Migration
from migrations.reembed.target import TargetError
from migrations.reembed.text_rule import has_text


def _names(m: Migration) -> dict[str, sql.Identifier]:
    prefix = m.object_prefix
    return {
        "table": m.table,
        "function": sql.Identifier(m.table_schema, f"{prefix}_dirty"),
        "trigger": sql.Identifier(f"{prefix}_dirty"),
        "pending_index": sql.Identifier(f"{prefix}_pending"),
        "pending_index_q": sql.Identifier(m.table_schema, f"{prefix}_pending"),
        "hnsw_index": sql.Identifier(f"{prefix}_hnsw"),
        "hnsw_index_q": sql.Identifier(m.table_schema, f"{prefix}_hnsw"),
        "id": sql.Identifier(m.id_column),
        "text": sql.Identifier(m.text_column),
    }


def _dirty_function(m: Migration, cols: Columns) -> sql.Composed:
    n = _names(m)
    # Text changed: its new vector is stale. NULL marks it for the catch-up/following passes.
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $body$"
        " BEGIN NEW.{new} := NULL; NEW.{manifest} := NULL; RETURN NEW; END $body$"
    ).format(
        function=n["function"], new=sql.Identifier(cols.new), manifest=sql.Identifier(cols.manifest)
    )


def check_new_columns(m: Migration, column_types: Mapping[str, str]) -> None:
    """Refuse a new column (or its manifest column) that names one of the table's own columns
    or an existing column of another type: ADD COLUMN IF NOT EXISTS would keep it, the backfill
    would write vectors into it, and the dirty trigger would wipe it when the text changes."""
    cols = m.columns
    roles = {m.id_column: "id", m.text_column: "text", m.legacy_column: "legacy vector"}
    wanted = {cols.new: f"vector({m.dimension})", cols.manifest: "text"}
    for column, kind in wanted.items():
        if column in roles:
            raise TargetError(
                f"--new-column {m.new_column}: {column} is the table's {roles[column]} column;"
                " pick a new name"
            )
        found = column_types.get(column)
        if found is not None and found != kind:
            raise TargetError(
                f"--new-column {m.new_column}: {column} already exists as {found}, not {kind};"
                " pick a new name"
            )


def existing_column_types(conn: psycopg.Connection[Any], m: Migration) -> dict[str, str]:
    """The table's columns and their types, as the catalog shows them now."""
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (m.table.as_string(conn),),
    ).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def start_statements(m: Migration) -> list[sql.Composed]:
    """Add the new columns and the trigger (one transaction; ADD COLUMN without a default is a
    catalog change only, so it does not rewrite the table)."""
    n, cols = _names(m), m.columns
    return [
        sql.SQL(
            "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {new} vector({dim}),"
            " ADD COLUMN IF NOT EXISTS {manifest} text"
        ).format(
            table=n["table"],
            new=sql.Identifier(cols.new),
            dim=sql.Literal(m.dimension),
            manifest=sql.Identifier(cols.manifest),
        ),
        _dirty_function(m, cols),
        sql.SQL("DROP TRIGGER IF EXISTS {trigger} ON {table}").format(**n),
        sql.SQL(
            "CREATE TRIGGER {trigger} BEFORE UPDATE OF {text} ON {table} FOR EACH ROW"
            " WHEN (OLD.{text} IS DISTINCT FROM NEW.{text}) EXECUTE FUNCTION {function}()"
        ).format(**n),
    ]


def pending_index_statement(m: Migration) -> sql.Composed:
    """A partial index over rows still to embed, so catch-up and following passes stay cheap
    (built CONCURRENTLY: outside a transaction, without blocking writers). Rows without text
    are left out: they never get a vector, and passes would otherwise walk them forever."""
    n = _names(m)
    return sql.SQL(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {pending_index} ON {table} ({id})"
        " WHERE {new} IS NULL AND {has_text}"
    ).format(new=sql.Identifier(m.columns.new), has_text=has_text(m.text_column), **n)


def hnsw_index_statement(m: Migration) -> sql.Composed:
    """The HNSW index on the new vectors; inner-product ops, as the vectors are normalised."""
    n = _names(m)
    return sql.SQL(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {hnsw_index} ON {table}"
        " USING hnsw ({new} vector_ip_ops)"
    ).format(new=sql.Identifier(m.columns.new), **n)


IndexKind = Literal["hnsw", "pending"]


def drop_invalid_index(
    conn: psycopg.Connection[Any], m: Migration, kind: IndexKind = "hnsw"
) -> bool:
    """A CREATE INDEX CONCURRENTLY killed half-way leaves an invalid index, which the planner
    ignores and IF NOT EXISTS keeps: drop it so the build can be retried."""
    n = _names(m)
    row = conn.execute(
        "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = %s AND c.relname = %s",
        (m.table_schema, f"{m.object_prefix}_{kind}"),
    ).fetchone()
    if row is not None and row[0]:
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(n[f"{kind}_index_q"]))
        return True
    return False


def ensure_pending_index(conn: psycopg.Connection[Any], m: Migration) -> None:
    """The pending-rows index, valid: built if missing, rebuilt if a build was interrupted
    (without it every pass scans the whole table). Autocommit connection: CONCURRENTLY."""
    drop_invalid_index(conn, m, "pending")
    conn.execute(pending_index_statement(m))


def swap_statements(m: Migration, to_cut_over: bool) -> list[sql.Composed]:
    """Renames for cutover (to_cut_over) or rollback, plus the trigger function re-pointed at
    the renamed column; run in one transaction, so readers see one state or the other."""
    before = m.columns
    after = Migration(**{**m.__dict__, "cut_over": to_cut_over}).columns
    n = _names(m)

    def rename(old: str, new: str) -> sql.Composed:
        return sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
            n["table"], sql.Identifier(old), sql.Identifier(new)
        )

    # Legacy first: the new vectors take over its name (or give it back).
    if to_cut_over:
        order = [(before.legacy, after.legacy), (before.new, after.new)]
    else:
        order = [(before.new, after.new), (before.legacy, after.legacy)]
    return [
        *(rename(a, b) for a, b in order),
        rename(before.manifest, after.manifest),
        _dirty_function(m, after),
    ]


def finalize_statements(m: Migration) -> list[sql.Composed]:
    """After cutover: drop the legacy column and the migration's trigger, function and partial
    index. The new column and its HNSW index stay."""
    n, cols = _names(m), m.columns
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {trigger} ON {table}").format(**n),
        sql.SQL("DROP FUNCTION IF EXISTS {function}()").format(**n),
        sql.SQL("DROP INDEX IF EXISTS {pending_index_q}").format(**n),
        sql.SQL("ALTER TABLE {table} DROP COLUMN {legacy}").format(
            legacy=sql.Identifier(cols.legacy), **n
        ),
    ]
