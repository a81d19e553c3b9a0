"""The write path alone: 1024-d vectors into pgvector by the workers' writer (binary COPY into a
staging table, then one upsert) against `executemany` of single-row upserts, on the same rows."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from embedq_core.db import libpq_url, make_engine
from embedq_core.tables import vector_table
from workers.writer import VectorRow, write_vectors

MANIFEST_ID = "bench-write-path"


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


def _copy_upsert(
    conn: psycopg.Connection[Any], table: str, rows: Rows, vectors: np.ndarray, batch: int
) -> float:
    job_id = uuid.uuid4()
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        chunk, chunk_vectors = rows[i : i + batch], vectors[i : i + batch]
        with conn.transaction():
            write_vectors(conn, table, MANIFEST_ID, job_id, chunk, chunk_vectors)
    return time.perf_counter() - started


def _executemany(
    conn: psycopg.Connection[Any], table: str, rows: Rows, vectors: np.ndarray, batch: int
) -> float:
    job_id = uuid.uuid4()
    query = sql.SQL(
        "INSERT INTO {} AS v (id, text, metadata, embedding, manifest_id, content_hash,"
        " truncated, job_id, seq, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())"
        " ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, metadata = EXCLUDED.metadata,"
        " embedding = EXCLUDED.embedding, seq = EXCLUDED.seq WHERE v.seq <= EXCLUDED.seq"
    ).format(sql.Identifier(table))
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        params = [
            (
                *(r.external_id, r.text, Jsonb(r.metadata), v, MANIFEST_ID),
                *(r.content_hash, r.truncated, job_id, r.seq),
            )
            for r, v in zip(rows[i : i + batch], vectors[i : i + batch], strict=True)
        ]
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(query, params)
    return time.perf_counter() - started


def run_write_path(database_url: str, rows: int, dimension: int, batch: int) -> list[WriteRow]:
    """COPY + upsert and executemany into a fresh table without the HNSW index (as a bulk load
    runs), and COPY + upsert into one with it (as live writes into an indexed table run)."""
    data, vectors = _rows(rows, dimension, seed=1)
    results: list[WriteRow] = []
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        register_vector(conn)
        variants = [
            ("binary COPY + upsert (no HNSW index yet)", _copy_upsert, False, rows),
            ("executemany upsert (no HNSW index yet)", _executemany, False, min(rows, 5000)),
            ("binary COPY + upsert, HNSW index present", _copy_upsert, True, min(rows, 5000)),
        ]
        for name, write, hnsw, count in variants:
            table = _fresh_table(database_url, "bench_write", dimension, hnsw)
            seconds = write(conn, table, data[:count], vectors[:count], batch)
            results.append(WriteRow(name, count, seconds, count / seconds))
        conn.execute("DROP TABLE IF EXISTS vectors_bench_write")
    return results
