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

from migrations.reembed import chunk_table
from migrations.reembed.state import Columns, Migration
from migrations.reembed.target import TargetError


def object_names(m: Migration) -> dict[str, sql.Identifier]:
    """The table, and the trigger, function and indexes the migration names after itself."""
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
        "insert_trigger": sql.Identifier(f"{prefix}_queue"),
        "queued_index": sql.Identifier(f"{prefix}_queued"),
        "queued_index_q": sql.Identifier(m.table_schema, f"{prefix}_queued"),
    }


def dirty_function(m: Migration, cols: Columns) -> sql.Composed:
    """The trigger function marking a row stale in `cols` (created or replaced)."""
    n = object_names(m)
    if m.chunk_table is not None:
        return chunk_table.dirty_function(m, cols, n["function"])
    if m.is_vectorizer and m.queued_column is not None:
        # A vectorizer's writers pay this and an index entry, never an embedding: a changed
        # text clears the vector and stamps the wait's start (status's lag); an inserted row
        # without a vector is stamped. The step that embeds the row writes the vector.
        return sql.SQL(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $body$"
            " BEGIN IF TG_OP = 'INSERT' THEN"
            " IF NEW.{new} IS NULL THEN NEW.{queued} := now(); END IF;"
            " ELSE NEW.{new} := NULL; NEW.{manifest} := NULL;{sparse} NEW.{queued} := now();"
            " END IF; RETURN NEW; END $body$"
        ).format(
            function=n["function"],
            new=sql.Identifier(cols.new),
            manifest=sql.Identifier(cols.manifest),
            sparse=_clear_sparse(cols),
            queued=sql.Identifier(m.queued_column),
        )
    # Text changed: its new vector is stale. NULL marks it for the catch-up/following passes.
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $body$"
        " BEGIN NEW.{new} := NULL; NEW.{manifest} := NULL;{sparse} RETURN NEW; END $body$"
    ).format(
        function=n["function"],
        new=sql.Identifier(cols.new),
        manifest=sql.Identifier(cols.manifest),
        sparse=_clear_sparse(cols),
    )


def _clear_sparse(cols: Columns) -> sql.Composable:
    if cols.sparse is None:
        return sql.SQL("")
    return sql.SQL(" NEW.{} := NULL;").format(sql.Identifier(cols.sparse))


def check_new_columns(m: Migration, column_types: Mapping[str, str]) -> None:
    """Refuse a new column (or its manifest column) that names one of the table's own columns
    or an existing column of another type: ADD COLUMN IF NOT EXISTS would keep it, the backfill
    would write vectors into it, and the dirty trigger would wipe it when the text changes."""
    cols = m.columns
    roles = {m.id_column: "id", **{column: "text" for column in m.text_source.columns}}
    wanted = {cols.new: f"vector({m.dimension})", cols.manifest: "text"}
    if cols.chunked:  # the vectors (and weights) live in the chunk table
        wanted = {cols.manifest: "text"}
    elif cols.sparse is not None:
        wanted[cols.sparse] = f"sparsevec({m.sparse_dimension})"
    if m.queued_column is not None:
        wanted[m.queued_column] = "timestamp with time zone"
    else:
        roles[m.legacy_column] = "legacy vector"
    option = "--vector" if m.is_vectorizer else f"--new-column {m.new_column}"
    for column, kind in wanted.items():
        if column in roles:
            raise TargetError(
                f"{option}: {column} is the table's {roles[column]} column; pick a new name"
            )
        found = column_types.get(column)
        if found is not None and found != kind:
            raise TargetError(
                f"{option}: {column} already exists as {found}, not {kind}; pick a new name"
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
    catalog change only, so it does not rewrite the table). A vectorizer also gets the column
    stamping when a row began to wait, and a trigger on INSERT."""
    n, cols = object_names(m), m.columns
    added = [sql.SQL("ADD COLUMN IF NOT EXISTS {} text").format(sql.Identifier(cols.manifest))]
    if not cols.chunked:
        added.insert(
            0,
            sql.SQL("ADD COLUMN IF NOT EXISTS {} vector({})").format(
                sql.Identifier(cols.new), sql.Literal(m.dimension)
            ),
        )
    if cols.sparse is not None and not cols.chunked:
        added.append(
            sql.SQL("ADD COLUMN IF NOT EXISTS {} sparsevec({})").format(
                sql.Identifier(cols.sparse), sql.Literal(m.sparse_dimension)
            )
        )
    if m.queued_column is not None:
        added.append(
            sql.SQL("ADD COLUMN IF NOT EXISTS {} timestamptz").format(
                sql.Identifier(m.queued_column)
            )
        )
    statements = [
        sql.SQL("ALTER TABLE {} {}").format(n["table"], sql.SQL(", ").join(added)),
        *chunk_table.create_statements(m),
        dirty_function(m, cols),
        sql.SQL("DROP TRIGGER IF EXISTS {trigger} ON {table}").format(**n),
        _update_trigger(m),
    ]
    if m.is_vectorizer:
        statements += [
            sql.SQL("DROP TRIGGER IF EXISTS {insert_trigger} ON {table}").format(**n),
            sql.SQL(
                "CREATE TRIGGER {insert_trigger} BEFORE INSERT ON {table} FOR EACH ROW"
                " EXECUTE FUNCTION {function}()"
            ).format(**n),
        ]
    return statements


def _update_trigger(m: Migration) -> sql.Composed:
    # UPDATE OF the text's columns: updates of other columns never fire it, nor re-embed.
    source = m.text_source
    return sql.SQL(
        "CREATE TRIGGER {trigger} BEFORE UPDATE OF {columns} ON {table} FOR EACH ROW"
        " WHEN ({changed}) EXECUTE FUNCTION {function}()"
    ).format(columns=source.update_of(), changed=source.changed(), **object_names(m))


def pending_index_statement(m: Migration) -> sql.Composed:
    """A partial index over rows still to embed, so catch-up and following passes stay cheap
    (built CONCURRENTLY: outside a transaction, without blocking writers). Rows without text
    are left out: they never get a vector, and passes would otherwise walk them forever."""
    n = object_names(m)
    return sql.SQL(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {pending_index} ON {table} ({id})"
        " WHERE {pending} IS NULL AND {has_text}"
    ).format(pending=sql.Identifier(m.columns.pending), has_text=m.text_source.has_text(), **n)


def queued_index_statement(m: Migration) -> sql.Composed | None:
    """A vectorizer's partial index on when its pending rows began to wait: the lag (the
    oldest) is read from its first entry, without a scan."""
    if m.queued_column is None:
        return None
    n = object_names(m)
    return sql.SQL(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {queued_index} ON {table} ({queued})"
        " WHERE {pending} IS NULL AND {has_text}"
    ).format(
        queued=sql.Identifier(m.queued_column),
        pending=sql.Identifier(m.columns.pending),
        has_text=m.text_source.has_text(),
        **n,
    )


def hnsw_index_statement(m: Migration) -> sql.Composed:
    """The HNSW index on the new vectors; inner-product ops, as the vectors are normalised."""
    n = object_names(m)
    return sql.SQL(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {hnsw_index} ON {vectors}"
        " USING hnsw ({new} vector_ip_ops)"
    ).format(
        vectors=m.chunk_table or n["table"],
        new=sql.Identifier(m.columns.new),
        hnsw_index=n["hnsw_index"],
    )


IndexKind = Literal["hnsw", "pending", "queued"]


def drop_invalid_index(
    conn: psycopg.Connection[Any], m: Migration, kind: IndexKind = "hnsw"
) -> bool:
    """A CREATE INDEX CONCURRENTLY killed half-way leaves an invalid index, which the planner
    ignores and IF NOT EXISTS keeps: drop it so the build can be retried."""
    n = object_names(m)
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
    """The pending-rows index (and a vectorizer's queued index), valid: built if missing,
    rebuilt if a build was interrupted (without it every pass scans the whole table).
    Autocommit connection: CONCURRENTLY."""
    drop_invalid_index(conn, m, "pending")
    conn.execute(pending_index_statement(m))
    queued = queued_index_statement(m)
    if queued is not None:
        drop_invalid_index(conn, m, "queued")
        conn.execute(queued)


def swap_statements(m: Migration, to_cut_over: bool) -> list[sql.Composed]:
    """Renames for cutover (to_cut_over) or rollback, plus the trigger function re-pointed at
    the renamed column; run in one transaction, so readers see one state or the other."""
    before = m.columns
    after = Migration(**{**m.__dict__, "cut_over": to_cut_over}).columns
    # Legacy first: the new vectors take over its name (or give it back).
    if to_cut_over:
        order = [(before.legacy, after.legacy), (before.new, after.new)]
    else:
        order = [(before.new, after.new), (before.legacy, after.legacy)]
    if before.sparse is not None and after.sparse is not None:
        order.append((before.sparse, after.sparse))
    return [
        *(rename_column(m, a, b) for a, b in order),
        rename_column(m, before.manifest, after.manifest),
        dirty_function(m, after),
    ]


def rename_column(m: Migration, old: str, new: str) -> sql.Composed:
    """ALTER TABLE ... RENAME COLUMN on the migration's table."""
    return sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
        m.table, sql.Identifier(old), sql.Identifier(new)
    )


def finalize_statements(m: Migration) -> list[sql.Composed]:
    """After cutover: drop the legacy column and the migration's trigger, function and partial
    index. The new column and its HNSW index stay."""
    n, cols = object_names(m), m.columns
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {trigger} ON {table}").format(**n),
        sql.SQL("DROP FUNCTION IF EXISTS {function}()").format(**n),
        sql.SQL("DROP INDEX IF EXISTS {pending_index_q}").format(**n),
        sql.SQL("ALTER TABLE {table} DROP COLUMN {legacy}").format(
            legacy=sql.Identifier(cols.legacy), **n
        ),
    ]


def drop_statements(m: Migration, drop_columns: bool) -> list[sql.Composed]:
    """A vectorizer dropped: its triggers, function and partial indexes; with drop_columns
    also its vector, manifest and queued columns (and so their HNSW index)."""
    n, cols = object_names(m), m.columns
    statements = [
        sql.SQL("DROP TRIGGER IF EXISTS {trigger} ON {table}").format(**n),
        sql.SQL("DROP TRIGGER IF EXISTS {insert_trigger} ON {table}").format(**n),
        sql.SQL("DROP FUNCTION IF EXISTS {function}()").format(**n),
        sql.SQL("DROP INDEX IF EXISTS {pending_index_q}").format(**n),
        sql.SQL("DROP INDEX IF EXISTS {queued_index_q}").format(**n),
    ]
    if drop_columns and m.chunk_table is not None:
        statements.append(sql.SQL("DROP TABLE IF EXISTS {}").format(m.chunk_table))
    if drop_columns:
        dropped = [
            *([] if cols.chunked else [cols.new]),
            cols.manifest,
            *([m.queued_column] if m.queued_column else []),
            *([cols.sparse] if cols.sparse and not cols.chunked else []),
        ]
        statements.append(
            sql.SQL("ALTER TABLE {} {}").format(
                n["table"],
                sql.SQL(", ").join(
                    sql.SQL("DROP COLUMN IF EXISTS {}").format(sql.Identifier(c)) for c in dropped
                ),
            )
        )
    return statements
