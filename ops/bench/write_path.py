"""The write path alone: 1024-d vectors into pgvector by the workers' writer (new ids by binary
COPY straight into the table; stored ids by COPY into a staging table and one upsert) against
`executemany` of single-row upserts and a round trip per row, on the same rows."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from embedq_core.db import libpq_url, make_engine
from embedq_core.settings import Settings
from embedq_core.tables import vector_table
from migrations.schema_upgrade import upgrade_head
from ops.devstack.stack import EmbeddedStack
from workers.delivery.rows import VectorRow, read_stored, write_vectors

MANIFEST_ID = "bench-write-path"
STORED_IDS = "ids already stored"  # in a variant's name: it rewrites the rows of the one before


@dataclass
class WriteRow:
    """One line of the write-path table."""

    variant: str
    rows: int
    seconds: float
    rows_per_s: float


def _rows(count: int, dimension: int, seed: int) -> tuple[list[VectorRow], np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [
        VectorRow(f"id-{i:08d}", f"text {i}", {"n": i}, i.to_bytes(32, "big"), False, i)
        for i in range(count)
    ]
    return rows, vectors


def _fresh_table(database_url: str, name: str, dimension: int, hnsw: bool) -> str:
    """The collection table as the product creates it, with or without its HNSW index."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS vectors_{name}")
            conn.exec_driver_sql(
                "INSERT INTO model_manifests (id, dimension, pooling, manifest)"
                " VALUES (%(id)s, %(dim)s, 'cls', '{}') ON CONFLICT DO NOTHING",
                {"id": MANIFEST_ID, "dim": dimension},
            )
            table = vector_table(name, dimension)
            table.create(conn)
            if not hnsw:
                for index in table.indexes:
                    conn.exec_driver_sql(f"DROP INDEX {index.name}")
    finally:
        engine.dispose()
    return table.name


Rows = list[VectorRow]


def _worker_write(
    conn: psycopg.Connection[Any], table: str, rows: Rows, vectors: np.ndarray, batch: int
) -> float:
    """As a worker writes a batch: lock the ids' rows, then write (new ids by COPY straight into
    the table, stored ones by COPY into the staging table and an upsert)."""
    job_id = uuid.uuid4()
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        chunk, chunk_vectors = rows[i : i + batch], vectors[i : i + batch]
        ids = [r.external_id for r in chunk]
        with conn.transaction():
            stored = read_stored(conn, table, ids, lock=True)
            absent = set(ids) - stored.keys()
            write_vectors(conn, table, MANIFEST_ID, job_id, chunk, chunk_vectors, absent)
    return time.perf_counter() - started


UPSERT_ONE = (
    "INSERT INTO {} AS v (id, text, metadata, embedding, manifest_id, content_hash,"
    " truncated, job_id, seq, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())"
    " ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, metadata = EXCLUDED.metadata,"
    " embedding = EXCLUDED.embedding, seq = EXCLUDED.seq WHERE v.seq <= EXCLUDED.seq"
)


def _params(rows: Rows, vectors: np.ndarray, job_id: uuid.UUID) -> list[tuple[Any, ...]]:
    return [
        (
            *(r.external_id, r.text, Jsonb(r.metadata), v, MANIFEST_ID),
            *(r.content_hash, r.truncated, job_id, r.seq),
        )
        for r, v in zip(rows, vectors, strict=True)
    ]


def _executemany(
    conn: psycopg.Connection[Any], table: str, rows: Rows, vectors: np.ndarray, batch: int
) -> float:
    """psycopg 3's executemany of single-row upserts (it pipelines them: few round trips)."""
    job_id = uuid.uuid4()
    query = sql.SQL(UPSERT_ONE).format(sql.Identifier(table))
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        params = _params(rows[i : i + batch], vectors[i : i + batch], job_id)
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(query, params)
    return time.perf_counter() - started


def _row_by_row(
    conn: psycopg.Connection[Any], table: str, rows: Rows, vectors: np.ndarray, batch: int
) -> float:
    """One upsert per row, each its own round trip: an encode-then-insert script's loop."""
    job_id = uuid.uuid4()
    query = sql.SQL(UPSERT_ONE).format(sql.Identifier(table))
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        params = _params(rows[i : i + batch], vectors[i : i + batch], job_id)
        with conn.transaction(), conn.cursor() as cur:
            for one in params:
                cur.execute(query, one)
    return time.perf_counter() - started


Writer = Callable[[psycopg.Connection[Any], str, Rows, np.ndarray, int], float]


def run_write_path(database_url: str, rows: int, dimension: int, batch: int) -> list[WriteRow]:
    """The worker's writer into a fresh table without the HNSW index (as a bulk load runs), again
    over the same ids (a re-submission: the upsert), against executemany (the same two ways) and
    a round trip per row, and into a table with its index (as live writes into an indexed table
    run); all after one untimed pass of the writer over the same rows."""
    data, vectors = _rows(rows, dimension, seed=1)
    results: list[WriteRow] = []
    small = min(rows, 5000)
    variants: list[tuple[str, Writer, bool, int, bool]] = [
        # name, writer, HNSW index, rows, into the previous variant's table
        ("binary COPY, new ids (no HNSW index yet)", _worker_write, False, rows, False),
        (f"binary COPY + upsert, {STORED_IDS}", _worker_write, False, rows, True),
        ("executemany upsert (psycopg 3, pipelined)", _executemany, False, rows, False),
        (f"executemany upsert, {STORED_IDS}", _executemany, False, rows, True),
        ("one upsert per row, a round trip each", _row_by_row, False, min(rows, 2000), False),
        ("binary COPY, new ids, HNSW index present", _worker_write, True, small, False),
    ]
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        register_vector(conn)
        # Untimed: a fresh cluster's first writes also create its WAL segment files and warm
        # its caches; without this the first variant alone pays that, and the order decides.
        _worker_write(
            conn, _fresh_table(database_url, "bench_write", dimension, False), data, vectors, batch
        )
        conn.execute("CHECKPOINT")
        table = ""
        for name, write, hnsw, count, again in variants:
            if not again:
                table = _fresh_table(database_url, "bench_write", dimension, hnsw)
            seconds = write(conn, table, data[:count], vectors[:count], batch)
            results.append(WriteRow(name, count, seconds, count / seconds))
        conn.execute("DROP TABLE IF EXISTS vectors_bench_write")
    return results


def run_write_path_on_embedded_stack(
    settings: Settings, rows: int, dimension: int, batch: int
) -> list[WriteRow]:
    """run_write_path on a fresh embedded Postgres with the schema at head."""
    with (
        tempfile.TemporaryDirectory() as data_dir,
        EmbeddedStack(settings, Path(data_dir)) as stack,
    ):
        database_url = stack.settings().require_database_url()
        upgrade_head(database_url)
        return run_write_path(database_url, rows, dimension, batch)
