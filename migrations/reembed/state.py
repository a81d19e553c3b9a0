"""A migration's state row, and the column names it implies before and after cutover."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from embedq_core.catalog import Chunking, chunking_of
from embedq_core.manifest import ModelManifest
from migrations.reembed.target import Target, check_identifier_length
from migrations.reembed.text_source import TemplatePart, TextSource

ID_TYPE_RE = re.compile(r"^[a-z][a-z0-9 _(),]*$")


class MigrationNotFound(LookupError):
    """No migration of that name."""


@dataclass(frozen=True)
class Columns:
    """Where the legacy and new vectors are right now."""

    legacy: str
    new: str
    manifest: str
    # The new vectors' lexical weights, where the model has a sparse head (BGE-M3).
    sparse: str | None = None
    # A chunking vectorizer keeps new vectors (and weights) in its chunk table, not the user's
    # table: there a row is embedded when its manifest column is set.
    chunked: bool = False

    @property
    def pending(self) -> str:
        """The user's table's column that is NULL while a row waits for its vector(s)."""
        return self.manifest if self.chunked else self.new


@dataclass(frozen=True)
class Migration:
    """One re-embedding migration as recorded in reembed_migrations."""

    name: str
    table_schema: str
    table_name: str
    id_column: str
    id_type: str
    text_column: str
    legacy_column: str
    new_column: str
    manifest_id: str
    dimension: int
    chunk_size: int
    # As `start` records a new one: planned, at the start of the keyset phase, no progress.
    status: str = "planned"
    phase: str = "keyset"
    checkpoint: Any = None
    cut_over: bool = False
    rows_total: int = 0
    rows_embedded: int = 0
    chunks_done: int = 0
    step_token: str | None = None
    error: str | None = None
    # Consecutive failed (or unfinished) attempts of a step and of the index build, and the
    # catch-up phase's pass count and rows found in its current pass (schema revision 0004).
    step_attempts: int = 0
    index_attempts: int = 0
    catchup_passes: int = 0
    pass_rows: int = 0
    # Rows without text when the rows were last counted (at start and at each phase change;
    # None: the table was too large to count, rows_total is then the planner's estimate).
    rows_no_text: int | None = None
    counted_at: datetime | None = None
    # 'vectorizer': follows the table for good in new_column (no legacy column, no cutover).
    # The text: text_column, or the template stored as JSON over text_columns (schema 0008).
    kind: str = "migration"
    text_columns: list[str] | None = None
    text_template: str | None = None
    # A migration changing a vectorizer's model: the vectorizer's name (schema 0010).
    vectorizer: str | None = None
    # The model's sparse head: its vocabulary size, the sparsevec column's dimension (None: a
    # dense model). The weights live in `<new vectors' column>_sparse` (schema 0010).
    sparse_dimension: int | None = None
    # A chunking vectorizer's windows, as a chunking collection's (schema 0011; None: one
    # vector per row).
    chunk_max_tokens: int | None = None
    chunk_overlap_tokens: int | None = None

    @property
    def chunking(self) -> Chunking | None:
        """How rows' texts are cut into windows (None: one vector per row)."""
        return chunking_of(self.chunk_max_tokens, self.chunk_overlap_tokens)

    @property
    def chunks_relname(self) -> str | None:
        """A chunking vectorizer's table of windows, in the user's table's schema."""
        if self.chunking is None:
            return None
        return chunk_table_name(self.table_name, self.new_column)

    @property
    def chunk_table(self) -> sql.Identifier | None:
        """chunks_relname, schema-qualified and quoted."""
        relname = self.chunks_relname
        return None if relname is None else sql.Identifier(self.table_schema, relname)

    @property
    def is_vectorizer(self) -> bool:
        """A vectorizer keeps its column embedded for good; a migration ends in finalize."""
        return self.kind == "vectorizer"

    @property
    def text_source(self) -> TextSource:
        """What the rows' text is: one column, or the template over several."""
        if self.text_template is None:
            return TextSource((self.text_column,))
        stored = json.loads(self.text_template)
        parts = tuple(TemplatePart(p.get("literal", ""), p.get("column")) for p in stored["parts"])
        return TextSource(tuple(self.text_columns or [self.text_column]), parts)

    @property
    def template_written(self) -> str | None:
        """The template as the operator wrote it (None: one text column)."""
        return (
            None if self.text_template is None else str(json.loads(self.text_template)["written"])
        )

    @property
    def queued_column(self) -> str | None:
        """A vectorizer's column stamping when a row began to wait for its vector (the lag)."""
        return f"{self.new_column}_queued_at" if self.is_vectorizer else None

    @property
    def table(self) -> sql.Identifier:
        """The user's table, quoted."""
        return sql.Identifier(self.table_schema, self.table_name)

    def display_name(self, conn: psycopg.Connection[Any]) -> str:
        """The table as written in SQL, quoted where it needs to be."""
        return self.table.as_string(conn)

    @property
    def columns(self) -> Columns:
        """Before cutover the new vectors live in new_column; cutover gives them the legacy
        name, so readers' SQL keeps working, and moves the legacy vectors aside. A vectorizer
        has one column, its own, from the start."""
        if self.is_vectorizer:
            legacy, new = self.new_column, self.new_column
        elif self.cut_over:
            legacy, new = f"{self.legacy_column}_legacy", self.legacy_column
        else:
            legacy, new = self.legacy_column, self.new_column
        sparse = None if self.sparse_dimension is None else f"{new}_sparse"
        return Columns(
            legacy=legacy,
            new=new,
            manifest=f"{new}_manifest",
            sparse=sparse,
            chunked=self.chunking is not None,
        )

    @property
    def id_type_sql(self) -> sql.SQL:
        """The primary key's type (read from the catalog at plan time) for casts."""
        if not ID_TYPE_RE.match(self.id_type):
            raise ValueError(f"unsupported primary key type {self.id_type!r}")
        return sql.SQL(self.id_type)

    @property
    def object_prefix(self) -> str:
        """Prefix of the trigger, function and indexes this migration creates."""
        return f"embedq_{self.name}"


def stored_template(written: str, parts: tuple[TemplatePart, ...]) -> str:
    """The template as reembed_migrations.text_template keeps it: as written, and its parts
    with exact column names."""
    return json.dumps(
        {
            "written": written,
            "parts": [
                {"column": p.column} if p.column is not None else {"literal": p.literal}
                for p in parts
            ],
        },
        ensure_ascii=False,
    )


def chunk_table_name(table_name: str, vector_column: str) -> str:
    """`<table>_<vector>_chunks`: where a chunking vectorizer keeps its windows."""
    return f"{table_name}_{vector_column}_chunks"


def sparse_dimension(manifest: ModelManifest) -> int | None:
    """The sparsevec dimension a migration to this model stores (None: a dense model)."""
    return manifest.vocab_size if manifest.sparse else None


def planned_names(target: Target, new_column: str, sparse: bool) -> list[str]:
    """Every column name the migration will use, before and after cutover; each must fit in
    an identifier, or Postgres would truncate it and two names could collide."""
    legacy = target.legacy_column
    names = [new_column, f"{new_column}_manifest", f"{legacy}_legacy", f"{legacy}_manifest"]
    if sparse:
        names += [f"{new_column}_sparse", f"{legacy}_sparse"]
    return [check_identifier_length("derived column name", name) for name in names]


def load(conn: psycopg.Connection[Any], name: str, lock: bool = False) -> Migration:
    """Read a migration; lock=True takes its row lock (released at the end of the transaction)."""
    query = "SELECT * FROM reembed_migrations WHERE name = %s" + (" FOR UPDATE" if lock else "")
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query, (name,)).fetchone()
    if row is None:
        raise MigrationNotFound(f"no re-embedding migration named {name!r}")
    fields = Migration.__dataclass_fields__
    return Migration(**{k: v for k, v in row.items() if k in fields})


def set_fields(conn: psycopg.Connection[Any], name: str, **values: Any) -> None:
    """Update state columns (names are ours, not user input) and touch updated_at."""
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(key), sql.Placeholder(key)) for key in values
    )
    conn.execute(
        sql.SQL(
            "UPDATE reembed_migrations SET {}, updated_at = now() WHERE name = %(name)s"
        ).format(assignments),
        {**values, "name": name},
    )
