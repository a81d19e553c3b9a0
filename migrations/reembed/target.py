"""The user's table, validated against the catalog.

Names are written as in SQL and parsed by Postgres itself (`parse_ident`): `songs`,
`public.songs`, `"Shop Data"."Song Lyrics"`, `"lyricsText"`. Unquoted names fold to lower
case, quoted ones are kept exactly, so any name Postgres accepts works. After parsing, names
only ever reach SQL through psycopg.sql.Identifier, never by interpolation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

MIGRATION_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Postgres silently truncates longer identifiers (NAMEDATALEN - 1); refuse them instead.
MAX_IDENTIFIER_BYTES = 63
NAME_HELP = """write it as in SQL: songs, public.songs or '"Shop Data"."Song Lyrics"'"""


class TargetError(ValueError):
    """The table or a column is missing, of the wrong kind, or not a valid SQL name."""


def check_identifier_length(kind: str, value: str) -> str:
    """A name Postgres would keep whole, or a TargetError naming it."""
    if len(value.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise TargetError(f"{kind} {value!r} is longer than {MAX_IDENTIFIER_BYTES} bytes")
    return value


def parse_name(conn: psycopg.Connection[Any], kind: str, written: str, parts: int) -> list[str]:
    """Split a name written as in SQL into its exact parts (at most `parts` of them)."""
    try:
        row = conn.execute("SELECT parse_ident(%s)", (written,)).fetchone()
    except psycopg.errors.InvalidParameterValue as exc:
        raise TargetError(f"{kind} {written!r} is not a valid SQL name: {NAME_HELP}") from exc
    names: list[str] = row[0] if row else []
    if not 1 <= len(names) <= parts:
        raise TargetError(f"{kind} {written!r} has {len(names)} dotted parts: {NAME_HELP}")
    return [check_identifier_length(kind, name) for name in names]


def check_migration_name(name: str) -> str:
    """Migration names become parts of trigger and index names: keep them short and plain."""
    if not MIGRATION_NAME_RE.match(name):
        raise TargetError(f"migration name {name!r} must match {MIGRATION_NAME_RE.pattern}")
    return name


def default_migration_name(table: str) -> str:
    """`<table>_reembed`, reduced to the plain characters a migration name allows."""
    slug = re.sub(r"[^a-z0-9]+", "_", table.lower()).strip("_")[:32]
    if not slug or not slug[0].isalpha():
        slug = f"t_{slug}".rstrip("_")
    return f"{slug}_reembed"


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
    # Every column's type as format_type shows it (e.g. "vector(1024)").
    column_types: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def qualified(self) -> sql.Identifier:
        """schema.table, quoted."""
        return sql.Identifier(self.schema, self.table)


def _find_table(conn: psycopg.Connection[Any], written: str) -> tuple[int, str, str]:
    parts = parse_name(conn, "table", written, 2)
    # to_regclass resolves an unqualified name through search_path, as the product's SQL does.
    row = conn.execute(
        "SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
        (sql.Identifier(*parts).as_string(conn),),
    ).fetchone()
    if row is None:
        near = conn.execute(
            "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE lower(c.relname) = lower(%s) AND c.relkind IN ('r', 'p') LIMIT 3",
            (parts[-1],),
        ).fetchall()
        hint = f"; did you mean {', '.join(r[0] for r in near)}?" if near else ""
        raise TargetError(f"table {written} does not exist{hint}")
    if row[3] not in ("r", "p"):
        raise TargetError(f"{written} is not a table")
    return int(row[0]), str(row[1]), str(row[2])


def find_table(conn: psycopg.Connection[Any], written: str) -> tuple[int, str, str, dict[str, str]]:
    """The table's oid, schema, name and its columns' types (format_type)."""
    relid, schema, name = _find_table(conn, written)
    columns = dict(
        conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
            (relid,),
        ).fetchall()
    )
    return relid, schema, name, columns


def primary_key_column(
    conn: psycopg.Connection[Any], relid: int, columns: dict[str, str], table: str, written: str
) -> str:
    """The id column, which must be the table's single-column primary key."""
    id_name = find_column(conn, columns, "id column", written)
    primary_key = conn.execute(
        "SELECT array_agg(a.attname) FROM pg_index i JOIN pg_attribute a"
        " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = %s AND i.indisprimary",
        (relid,),
    ).fetchone()
    if primary_key is None or primary_key[0] != [id_name]:
        raise TargetError(f"{written} must be the single-column primary key of {table}")
    return id_name


def find_column(
    conn: psycopg.Connection[Any], columns: dict[str, str], kind: str, written: str
) -> str:
    (name,) = parse_name(conn, kind, written, 1)
    if name not in columns:
        near = [c for c in columns if c.lower() == name.lower()]
        hint = f"; did you mean {sql.Identifier(near[0]).as_string(conn)}?" if near else ""
        raise TargetError(f"{kind} {written} is not a column of the table{hint}")
    return name


def resolve_target(
    conn: psycopg.Connection[Any], table: str, id_column: str, text_column: str, vector_column: str
) -> Target:
    """Parse every name, check it against the catalog, return what the migration needs."""
    relid, schema, name, columns = find_table(conn, table)
    id_name = primary_key_column(conn, relid, columns, table, id_column)
    text_name = find_column(conn, columns, "text column", text_column)
    vector_name = find_column(conn, columns, "vector column", vector_column)
    if columns[text_name] != "text" and not columns[text_name].startswith("character varying"):
        raise TargetError(f"text column {text_column} is {columns[text_name]}, not text")
    match = re.fullmatch(r"vector\((\d+)\)", columns[vector_name])
    if match is None:
        raise TargetError(f"vector column {vector_column} is {columns[vector_name]}")
    not_null = conn.execute(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = %s AND attname = %s",
        (relid, vector_name),
    ).fetchone()
    if not_null is not None and not_null[0]:
        # Writers that send only text (the recommended way during the migration) and every row
        # written after cutover leave the legacy column empty: NOT NULL would refuse them.
        statement = sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(
            sql.Identifier(schema, name), sql.Identifier(vector_name)
        )
        raise TargetError(
            f"vector column {vector_column} is NOT NULL: rows written with text only (during the "
            "migration) and after cutover leave it empty, so it must accept NULL first. Run, as "
            f"the table's owner: {statement.as_string(conn)};"
        )
    return Target(
        schema=schema,
        table=name,
        id_column=id_name,
        id_type=columns[id_name],
        text_column=text_name,
        legacy_column=vector_name,
        legacy_dimension=int(match.group(1)),
        columns=frozenset(columns),
        column_types=columns,
    )
