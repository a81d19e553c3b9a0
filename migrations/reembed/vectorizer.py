"""Table vectorizers: bind a table once, and its vector column follows the text for good.

A vectorizer is a re-embedding migration without a legacy column that is never finalized
(kind 'vectorizer' in reembed_migrations): the same backfill, catch-up, index build and
following steps on the same workers, the same pause, resume and status. Its own parts: the
text may be a template over several columns (text_source.py); its trigger also stamps inserted
rows, and stamps when a row began to wait (`<vector>_queued_at`, read by status as the lag);
there is no cutover, and `drop` removes its trigger (and, if asked, its columns).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from embedq_core.catalog import Chunking, InvalidChunking, check_chunking
from embedq_core.manifest import ModelManifest
from migrations.reembed import ddl, model_change
from migrations.reembed.control import MigrationStateError
from migrations.reembed.locking import LockPolicy, limit_lock_wait, with_lock_retries
from migrations.reembed.state import Migration, load, sparse_dimension, stored_template
from migrations.reembed.target import (
    TargetError,
    check_identifier_length,
    check_migration_name,
    find_column,
    find_table,
    parse_name,
    primary_key_column,
)
from migrations.reembed.text_source import TemplatePart, split_template

TEXT_TYPES = ("text", "character varying")


def _template_parts(
    conn: psycopg.Connection[Any], columns: dict[str, str], template: str
) -> tuple[TemplatePart, ...]:
    parts = []
    for part in split_template(template):
        if part.column is None:
            parts.append(part)
        else:
            name = find_column(conn, columns, "template column", part.column)
            parts.append(TemplatePart(column=name))
    return tuple(parts)


def draft_vectorizer(
    conn: psycopg.Connection[Any],
    name: str,
    table: str,
    id_column: str,
    text_column: str | None,
    template: str | None,
    vector_column: str,
    manifest: ModelManifest,
    chunk_size: int,
    chunking: Chunking | None = None,
) -> Migration:
    """Check every name against the catalog and return the vectorizer `add` would record. The
    vector column may be missing (it is created) or an existing empty vector(N) of the model's
    dimension. With `chunking`, each row's text is cut into windows kept in a new table
    `<table>_<vector>_chunks` (chunk_table.py), whose vector column is named `vector_column`."""
    if chunking is not None:
        try:
            check_chunking(chunking, manifest.max_length)
        except InvalidChunking as exc:
            raise TargetError(str(exc)) from exc
    if (text_column is None) == (template is None):
        raise TargetError("give the text as --text COLUMN or as --template '{a}\\n{b}', not both")
    relid, schema, table_name, columns = find_table(conn, table)
    id_name = primary_key_column(conn, relid, columns, table, id_column)
    if text_column is not None:
        text_name = find_column(conn, columns, "text column", text_column)
        if not columns[text_name].startswith(TEXT_TYPES):
            raise TargetError(f"text column {text_column} is {columns[text_name]}, not text")
        text_columns, stored = [text_name], None
    else:
        assert template is not None
        parts = _template_parts(conn, columns, template)
        text_columns = list(dict.fromkeys(p.column for p in parts if p.column is not None))
        stored = stored_template(template, parts)
    (vector_name,) = parse_name(conn, "vector column", vector_column, 1)
    draft = Migration(
        name=check_migration_name(name),
        table_schema=schema,
        table_name=table_name,
        id_column=id_name,
        id_type=columns[id_name],
        text_column=text_columns[0],
        legacy_column=vector_name,
        new_column=vector_name,
        manifest_id=manifest.manifest_id,
        dimension=manifest.dimension,
        chunk_size=chunk_size,
        sparse_dimension=sparse_dimension(manifest),
        kind="vectorizer",
        text_columns=text_columns if stored is not None else None,
        text_template=stored,
        chunk_max_tokens=None if chunking is None else chunking.max_tokens,
        chunk_overlap_tokens=None if chunking is None else chunking.overlap_tokens,
    )
    check_columns(conn, draft, columns)
    return draft


def check_columns(conn: psycopg.Connection[Any], m: Migration, columns: dict[str, str]) -> None:
    """The vector, manifest and queued columns: free names, or already of the right type; a
    vector column already holding vectors is refused (which model made them?)."""
    ddl.check_new_columns(m, columns)
    cols = m.columns
    for column in (cols.new, cols.manifest, m.queued_column or ""):
        check_identifier_length("derived column name", column)
    if m.chunk_table is not None:
        chunks = check_identifier_length("chunk table name", m.chunks_relname or "")
        taken = conn.execute("SELECT to_regclass(%s)", (m.chunk_table.as_string(conn),))
        row = taken.fetchone()
        if row is not None and row[0] is not None:
            raise TargetError(
                f"{m.chunk_table.as_string(conn)} exists: a chunking vectorizer creates its"
                f" table of windows {chunks} itself; drop it or pick another --vector name"
            )
    elif cols.new in columns:
        filled = conn.execute(
            sql.SQL("SELECT 1 FROM {} WHERE {} IS NOT NULL LIMIT 1").format(
                m.table, sql.Identifier(cols.new)
            )
        ).fetchone()
        if filled is not None:
            raise TargetError(
                f"column {cols.new} already holds vectors: bind an empty or new column (to move "
                "existing vectors to a new model, use embedq reembed)"
            )


def drop(
    conn: psycopg.Connection[Any], name: str, policy: LockPolicy, drop_columns: bool
) -> Migration:
    """Remove a vectorizer's trigger, function and partial indexes, and its record (its steps
    then end); with drop_columns also its vector, manifest and queued columns."""

    def attempt() -> Migration:
        with conn.transaction():
            m = load(conn, name, lock=True)
            if not m.is_vectorizer:
                raise MigrationStateError(f"{name} is a re-embedding migration, not a vectorizer")
            change = model_change.in_flight(conn, name)
            if change is not None:
                raise MigrationStateError(
                    f"{name} has a model change in progress ({change}): finalize it first"
                )
            limit_lock_wait(conn, policy)
            for statement in ddl.drop_statements(m, drop_columns):
                conn.execute(statement)
            conn.execute("DELETE FROM reembed_migrations WHERE name = %s", (name,))
            return m

    return with_lock_retries(conn, load(conn, name).table, "drop", policy, attempt)
