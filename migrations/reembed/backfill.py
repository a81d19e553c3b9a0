"""One step of a migration: embed the next chunk and move the checkpoint, in one transaction.

A step holds the migration's row lock while it works, so steps never overlap; a worker killed
mid-chunk rolls back its transaction, and the next step redoes at most that one chunk.
Phases: keyset (every row, by primary key) → catchup (rows whose new vector is NULL: inserted
behind the checkpoint, or whose text changed) → index (HNSW, CONCURRENTLY) → following (keep
new and changed rows embedded until finalize).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from embedq_core.staging import copy_to_stage
from migrations.reembed import ddl
from migrations.reembed.state import Migration, load, set_fields

STAGE = "embedq_reembed_stage"
STEP_LOCK_SQL = "SELECT pg_try_advisory_lock(hashtext('embedq_reembed'), hashtext(%s))"
STEP_UNLOCK_SQL = "SELECT pg_advisory_unlock(hashtext('embedq_reembed'), hashtext(%s))"

Outcome = Literal["chunk", "phase", "idle", "stopped", "busy", "stale"]


class VectorSource(Protocol):
    """What a step needs of the engine."""

    manifest_id: str

    def vectors(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Unit-length vectors of texts, in order."""


@dataclass(frozen=True)
class StepResult:
    """What one step did and when the next should run (None: do not send one)."""

    outcome: Outcome
    phase: str
    rows_read: int = 0
    rows_written: int = 0
    next_delay_s: float | None = 0.0


def _json_key(value: Any) -> Any:
    return value if isinstance(value, int | str) else str(value)


def _next_rows(conn: psycopg.Connection[Any], m: Migration) -> list[tuple[Any, str]]:
    cols = m.columns
    conditions = [
        sql.SQL("{} IS NOT NULL AND btrim({}) <> ''").format(
            sql.Identifier(m.text_column), sql.Identifier(m.text_column)
        )
    ]
    if m.phase != "keyset":
        conditions.append(sql.SQL("{} IS NULL").format(sql.Identifier(cols.new)))
    if m.checkpoint is not None:
        conditions.append(
            sql.SQL("{} > {}::{}").format(
                sql.Identifier(m.id_column), sql.Literal(m.checkpoint), m.id_type_sql
            )
        )
    query = sql.SQL(
        "SELECT {id}, {text} FROM {table} WHERE {where} ORDER BY {id} LIMIT {n}"
    ).format(
        id=sql.Identifier(m.id_column),
        text=sql.Identifier(m.text_column),
        table=m.table,
        where=sql.SQL(" AND ").join(conditions),
        n=sql.Literal(m.chunk_size),
    )
    return [(r[0], r[1]) for r in conn.execute(query).fetchall()]


def _write(
    conn: psycopg.Connection[Any],
    m: Migration,
    rows: list[tuple[Any, str]],
    vectors: npt.NDArray[np.float32],
) -> int:
    """Set the new vector where the text is still the one embedded (a text changed meanwhile
    keeps NULL and is caught up later). Returns rows written."""
    copy_to_stage(
        conn,
        STAGE,
        [("id", "text"), ("embedding", "vector"), ("text_md5", "text")],
        (
            (
                str(row_id),
                vector,
                hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest(),
            )
            for (row_id, text), vector in zip(rows, vectors, strict=True)
        ),
    )
    with conn.cursor() as cur:
        cols = m.columns
        cur.execute(
            sql.SQL(
                "UPDATE {table} t SET {new} = s.embedding, {manifest} = %s FROM {stage} s"
                " WHERE t.{id} = s.id::{id_type} AND md5(t.{text}) = s.text_md5"
            ).format(
                table=m.table,
                new=sql.Identifier(cols.new),
                manifest=sql.Identifier(cols.manifest),
                stage=sql.Identifier(STAGE),
                id=sql.Identifier(m.id_column),
                id_type=m.id_type_sql,
                text=sql.Identifier(m.text_column),
            ),
            (m.manifest_id,),
        )
        return cur.rowcount


def _build_index(conn: psycopg.Connection[Any], m: Migration, maintenance_work_mem: str) -> None:
    # CREATE INDEX CONCURRENTLY cannot run in a transaction; conn is in autocommit mode.
    conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (maintenance_work_mem,))
    ddl.drop_invalid_index(conn, m)
    conn.execute(ddl.hnsw_index_statement(m))


@dataclass(frozen=True)
class StepOptions:
    """Settings a step needs: idle wait in the following phase, and memory for the HNSW build."""

    follow_interval_s: float
    maintenance_work_mem: str


def run_step(
    conn: psycopg.Connection[Any],
    source: VectorSource,
    name: str,
    token: str,
    options: StepOptions,
) -> StepResult:
    """Advance migration `name` by one chunk or one phase change."""
    # A session lock for the whole step (the index build runs outside any transaction); it
    # dies with the connection, so a killed worker never leaves the migration locked.
    locked = conn.execute(STEP_LOCK_SQL, (name,)).fetchone()
    if not (locked and locked[0]):
        return StepResult("busy", "", next_delay_s=None)
    try:
        return _locked_step(conn, source, name, token, options)
    finally:
        if not conn.closed and not conn.broken:
            conn.execute(STEP_UNLOCK_SQL, (name,))


def _locked_step(
    conn: psycopg.Connection[Any],
    source: VectorSource,
    name: str,
    token: str,
    options: StepOptions,
) -> StepResult:
    build_index: Migration | None = None
    with conn.transaction():
        # The row lock waits for an operator action in progress (pause, cutover) and makes
        # it wait for this chunk; other steps are already kept out by the session lock.
        m = load(conn, name, lock=True)
        if m.step_token != token:
            return StepResult("stale", m.phase, next_delay_s=None)
        if m.status != "running":
            return StepResult("stopped", m.phase, next_delay_s=None)
        if m.manifest_id != source.manifest_id:
            set_fields(
                conn,
                name,
                status="failed",
                error=f"worker serves {source.manifest_id}, migration needs {m.manifest_id}",
            )
            return StepResult("stopped", m.phase, next_delay_s=None)
        if m.phase == "index":
            build_index = m
        else:
            started = time.perf_counter()
            rows = _next_rows(conn, m)
            if not rows:
                return _advance_phase(conn, m, options.follow_interval_s)
            vectors = source.vectors([text for _, text in rows])
            written = _write(conn, m, rows, vectors)
            conn.execute(
                "INSERT INTO reembed_chunks (migration, chunk_no, phase, first_id, last_id,"
                " rows_read, rows_written, seconds) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    name,
                    m.chunks_done + 1,
                    m.phase,
                    Jsonb(_json_key(rows[0][0])),
                    Jsonb(_json_key(rows[-1][0])),
                    len(rows),
                    written,
                    time.perf_counter() - started,
                ),
            )
            set_fields(
                conn,
                name,
                checkpoint=Jsonb(_json_key(rows[-1][0])),
                chunks_done=m.chunks_done + 1,
                rows_embedded=m.rows_embedded + written,
            )
            return StepResult("chunk", m.phase, len(rows), written)
    assert build_index is not None
    _build_index(conn, build_index, options.maintenance_work_mem)
    with conn.transaction():
        set_fields(conn, name, phase="following", checkpoint=None)
    return StepResult("phase", "following")


def _advance_phase(
    conn: psycopg.Connection[Any], m: Migration, follow_interval_s: float
) -> StepResult:
    if m.phase == "keyset":
        set_fields(conn, m.name, phase="catchup", checkpoint=None)
        return StepResult("phase", "catchup")
    if m.checkpoint is not None:  # end of a pass: start the next one from the beginning
        set_fields(conn, m.name, checkpoint=None)
        return StepResult("phase", m.phase)
    if m.phase == "catchup":  # a whole pass found nothing left to embed
        set_fields(conn, m.name, phase="index", checkpoint=None)
        return StepResult("phase", "index")
    set_fields(conn, m.name, checkpoint=None)  # following: touch updated_at, then wait
    return StepResult("idle", m.phase, next_delay_s=follow_interval_s)


def new_step_token(conn: psycopg.Connection[Any], name: str) -> str:
    """Make a fresh token the next step message must carry (older messages become stale)."""
    token = uuid.uuid4().hex
    set_fields(conn, name, step_token=token)
    return token
