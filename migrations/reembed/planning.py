"""What `reembed plan` and `start` check first: the migration a target would record, with its
names checked free, and the plan (rows, a timed sample, the DDL) shown before any change."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from embedq_core.manifest import ModelManifest
from migrations.reembed import ddl
from migrations.reembed.state import Migration, planned_names, sparse_dimension
from migrations.reembed.target import Target, TargetError, check_migration_name
from migrations.reembed.text_rule import has_text

SAMPLE_ROWS = 256


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
    try:
        planned = planned_names(target, new_column, manifest.sparse)
    except TargetError as exc:
        raise TargetError(f"{exc}: pick a shorter --new-column") from exc
    clashes = [c for c in planned if c in target.columns]
    if clashes and new_column not in target.columns:
        raise TargetError(f"{target.table} already has column(s) {clashes}: pick --new-column")
    draft = Migration(
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
        sparse_dimension=sparse_dimension(manifest),
    )
    ddl.check_new_columns(draft, target.column_types)
    return draft


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
            sql.SQL("SELECT {} FROM {} WHERE {} LIMIT {}").format(
                sql.Identifier(target.text_column),
                target.qualified,
                has_text(target.text_column),
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
        ddl.hnsw_index_statement(draft).as_string(conn)
        + "  -- after the backfill, by a worker's maintenance thread",
    ]
    return Plan(draft, rows, len(sample), rate, rows / rate if rate else float("inf"), statements)
