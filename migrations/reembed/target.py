"""The user's table, validated against the catalog: names are checked, never interpolated."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MIGRATION_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class TargetError(ValueError):
    """The table or a column is missing, of the wrong kind, or not a plain identifier."""


def check_identifier(kind: str, value: str) -> str:
    """A plain SQL identifier (letters, digits, underscore), or a TargetError naming it."""
    if not IDENTIFIER_RE.match(value):
        raise TargetError(f"{kind} {value!r} is not a plain SQL identifier")
    return value


def check_migration_name(name: str) -> str:
    """Migration names become parts of trigger and index names: keep them short and plain."""
    if not MIGRATION_NAME_RE.match(name):
        raise TargetError(f"migration name {name!r} must match {MIGRATION_NAME_RE.pattern}")
    return name


@dataclass(frozen=True)
class Target:
    """A table with a single-column primary key, a text column and a legacy vector column."""

    schema: str
    table: str
    id_column: str
    id_type: str
    text_column: str
    legacy_column: str
    legacy_dimension: int
    columns: frozenset[str]

    @property
    def qualified(self) -> sql.Identifier:
        """schema.table, quoted."""
        return sql.Identifier(self.schema, self.table)


def resolve_target(
    conn: psycopg.Connection[Any], table: str, id_column: str, text_column: str, vector_column: str
) -> Target:
    """Check every name against the catalog and return what the migration needs to know."""
    schema, _, name = table.rpartition(".")
    schema = check_identifier("schema", schema or "public")
    check_identifier("table", name)
    for kind, value in (
        ("id column", id_column),
        ("text column", text_column),
        ("vector column", vector_column),
    ):
        check_identifier(kind, value)
    relid = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, name),
    ).fetchone()
    if relid is None:
        raise TargetError(f"table {schema}.{name} does not exist")
    columns = dict(
        conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
            (relid[0],),
        ).fetchall()
    )
    for kind, column in (
        ("id column", id_column),
        ("text column", text_column),
        ("vector column", vector_column),
    ):
        if column not in columns:
            raise TargetError(f"{kind} {column!r} is not a column of {schema}.{name}")
    primary_key = conn.execute(
        "SELECT array_agg(a.attname) FROM pg_index i JOIN pg_attribute a"
        " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = %s AND i.indisprimary",
        (relid[0],),
    ).fetchone()
    if primary_key is None or primary_key[0] != [id_column]:
        raise TargetError(f"{id_column!r} must be the single-column primary key of {name}")
    if columns[text_column] not in ("text", "character varying") and not columns[
        text_column
    ].startswith("character varying"):
        raise TargetError(f"text column {text_column!r} is {columns[text_column]}, not text")
    match = re.fullmatch(r"vector\((\d+)\)", columns[vector_column])
    if match is None:
        raise TargetError(f"vector column {vector_column!r} is {columns[vector_column]}")
    return Target(
        schema=schema,
        table=name,
        id_column=id_column,
        id_type=columns[id_column],
        text_column=text_column,
        legacy_column=vector_column,
        legacy_dimension=int(match.group(1)),
        columns=frozenset(columns),
    )
