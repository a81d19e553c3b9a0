"""`embedq bench mine`: how fast `embedq mine` finds candidates in pgvector, the step whose cost
grows with the corpus: query lines per second through the miner's own SQL (ops/mining/
candidates.py), HNSW with the ef_search the default range needs against an exact scan, and the
HNSW candidates' recall of the exact ones, at several corpus sizes in one run.

Vectors are random unit vectors of the model's dimension, drawn two ways: uniform on the sphere
(the hardest case for HNSW: every row is about as far as any other, so its recall is a floor)
and clustered (around one centre per 50 rows, a row at cosine about 0.86 to its centre), closer
to how embeddings of real text spread. The embedding of the queries is the engine's work
(`embedq bench engine` gives its texts/s)."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from rich.console import Console
from rich.table import Table

from embedq_core.catalog import Collection
from embedq_core.db import libpq_url, make_engine
from embedq_core.settings import Settings
from ops.bench.engine import machine_description, machine_label, source_commit
from ops.devstack.stack import EmbeddedStack
from ops.mining.candidates import SearchPlan, nearest_rows, plan_search
from ops.mining.run import LINES_PER_BLOCK, SPARE_CANDIDATES

# The default --range 2-200 and the spare rows the miner fetches past its end.
DEFAULT_RANGE_END = 200


@dataclass
class MineBenchRow:
    """One line of the table."""

    rows: int
    distribution: str
    variant: str
    queries: int
    seconds: float
    queries_per_s: float
    recall_of_exact: float | None
    index_build_s: float | None


ROWS_PER_CENTRE = 50
# Noise per coordinate, in units of 1/sqrt(dimension): cosine to the centre 1/sqrt(1 + s^2).
CLUSTER_SPREAD = 0.6
DISTRIBUTIONS = ("uniform", "clustered")


def _unit(rng: np.random.Generator, count: int, dimension: int) -> Any:
    vectors = rng.standard_normal((count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _draw(rng: np.random.Generator, distribution: str, count: int, centres: Any) -> Any:
    dimension = centres.shape[1]
    if distribution == "uniform":
        return _unit(rng, count, dimension)
    picked = centres[rng.integers(0, len(centres), count)]
    noise = rng.standard_normal((count, dimension)).astype(np.float32) / np.sqrt(dimension)
    vectors = picked + CLUSTER_SPREAD * noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _fill(conn: psycopg.Connection[Any], table: str, vectors: Any) -> None:
    name = sql.Identifier(table)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
    conn.execute(
        sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, text text NOT NULL, embedding vector({}))")
        .format(name, sql.Literal(vectors.shape[1]))
    )  # fmt: skip
    copy_sql = sql.SQL("COPY {} (id, text, embedding) FROM STDIN WITH (FORMAT BINARY)").format(name)
    with conn.cursor().copy(copy_sql) as copy:
        copy.set_types(["text", "text", "vector"])
        for i, vector in enumerate(vectors):
            copy.write_row((f"r{i}", f"row {i}", vector))
    conn.execute(sql.SQL("ANALYZE {}").format(name))


def _collection(table: str, dimension: int) -> Collection:
    return Collection(table, "bench", dimension, table, 512, None)


def _search(
    url: str, corpus: Collection, queries: Collection, ids: list[str], plan: SearchPlan
) -> tuple[float, dict[str, list[str]]]:
    engine = make_engine(url, pool_size=1)
    found: dict[str, list[str]] = {}
    try:
        started = time.perf_counter()
        for start in range(0, len(ids), LINES_PER_BLOCK):
            with engine.begin() as conn:
                block = nearest_rows(
                    conn, corpus, queries, ids[start : start + LINES_PER_BLOCK], plan
                )
            found |= {k: [c.id for c in v] for k, v in block.items()}
        return time.perf_counter() - started, found
    finally:
        engine.dispose()


def run_mine_bench(
    settings: Settings,
    sizes: list[int],
    queries: int,
    exact_queries: int,
    dimension: int,
    out_json: Path,
    console: Console,
) -> list[MineBenchRow]:
    """For each corpus size: build the HNSW index, then time HNSW and exact candidate search."""
    rng = np.random.default_rng(0)
    per_query = DEFAULT_RANGE_END + SPARE_CANDIDATES
    results: list[MineBenchRow] = []
    with (
        tempfile.TemporaryDirectory() as data_dir,
        EmbeddedStack(settings, Path(data_dir)) as stack,
    ):
        url = stack.settings().require_database_url()
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(conn)
            query_ids = [f"r{i}" for i in range(queries)]
            for rows in sizes:
                centres = _unit(rng, max(rows // ROWS_PER_CENTRE, 1), dimension)
                for distribution in DISTRIBUTIONS:
                    _fill(conn, "bench_queries", _draw(rng, distribution, queries, centres))
                    table = f"bench_corpus_{rows}"
                    console.print(f"{rows:,} {distribution} rows of {dimension}-d: building HNSW")
                    _fill(conn, table, _draw(rng, distribution, rows, centres))
                    conn.execute("SET maintenance_work_mem = '1GB'")
                    started = time.perf_counter()
                    conn.execute(
                        sql.SQL("CREATE INDEX ON {} USING hnsw (embedding vector_ip_ops)").format(
                            sql.Identifier(table)
                        )
                    )
                    build_s = time.perf_counter() - started
                    corpus = _collection(table, dimension)
                    query_side = _collection("bench_queries", dimension)
                    exact_ids = query_ids[:exact_queries]
                    exact_s, exact = _search(
                        url, corpus, query_side, exact_ids, plan_search(per_query, True, None)
                    )
                    hnsw_s, approx = _search(
                        url, corpus, query_side, query_ids, plan_search(per_query, False, None)
                    )
                    recall = float(
                        np.mean(
                            [len(set(approx[q]) & set(exact[q])) / per_query for q in exact_ids]
                        )
                    )
                    results += [
                        MineBenchRow(
                            rows, distribution, f"HNSW, ef_search {per_query}", queries, hnsw_s,
                            queries / hnsw_s, recall, build_s,
                        ),
                        MineBenchRow(
                            rows, distribution, "exact scan", exact_queries, exact_s,
                            exact_queries / exact_s, 1.0, None,
                        ),
                    ]  # fmt: skip
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    machine = machine_description()
    _print(console, results, machine, dimension)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(
        json.dumps(
            {
                "bench": "mine",
                "commit": source_commit(),
                "machine": machine,
                "dimension": dimension,
                "candidates_per_query": per_query,
                "queries_per_block": LINES_PER_BLOCK,
                "results": [asdict(r) for r in results],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    console.print(f"wrote {out_json}")
    return results


def _print(
    console: Console, results: list[MineBenchRow], machine: dict[str, Any], dimension: int
) -> None:
    table = Table(
        title=f"embedq mine candidate search, {dimension}-d unit vectors, "
        f"{machine_label(machine)}; recall: of the exact candidates; build s: the HNSW index"
    )
    for column in (
        "rows",
        "variant",
        "queries",
        "s",
        "queries/s",
        "recall of exact",
        "HNSW build s",
    ):
        table.add_column(column, justify="left" if column in ("vectors", "variant") else "right")
    for r in results:
        table.add_row(
            f"{r.rows:,}",
            r.distribution,
            r.variant,
            str(r.queries),
            f"{r.seconds:.2f}",
            f"{r.queries_per_s:,.1f}",
            "" if r.recall_of_exact is None else f"{r.recall_of_exact:.3f}",
            "" if r.index_build_s is None else f"{r.index_build_s:.1f}",
        )
    console.print(table)
