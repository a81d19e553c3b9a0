"""Every code example of the README and the docs runs here against the real stack.

Which fixture a block runs on is its marker (tests/docs_examples.py). SQL: `$1` is bound to a
unit query vector of the fixture's dimension, `$2` (the `hybrid` fixture: a BGE-M3-shaped
collection `products`) to a sparse query vector; every SELECT must return rows. Shell and
Python: run as a user would, with the `export` line `embedq demo --keep-running` prints (API
URL, key, Postgres and Redis URLs) and the demo's model directory, in one working directory
per module; they must exit 0 and print no error body.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector import SparseVector
from pgvector.psycopg import register_vector
from psycopg import sql

from embedq_core.catalog import Chunking, create_collection, register_model_dir
from embedq_core.collection_index import hnsw_index_name
from embedq_core.db import libpq_url
from embedq_core.query_protocol import serving_key
from embedq_core.queueing import make_redis
from migrations.reembed.ddl import start_statements, swap_statements
from migrations.reembed.state import Migration
from ops.data.corpus import load_demo_corpus
from ops.devstack.processes import ChildProcess, start_worker
from ops.export.model import ExportOptions, export_model
from tests.docs_examples import Example, all_examples, runnable
from tests.reranker_models import build_bert_reranker
from tests.support import ServiceHandle, engine_config

SQL_BLOCKS = runnable("sql")
RERANK_TEXTS = [*(text for _, text in load_demo_corpus()), "天气预报说明天午后有强降雨。"]
SHELL_BLOCKS = runnable("bash", {"stack", "hybrid-stack", "rerank-stack"}) + runnable(
    "python", {"stack", "rerank-stack"}
)


def statements(block: str) -> list[str]:
    """The block's statements (the docs put no semicolons inside literals)."""
    body = "\n".join(line for line in block.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def unit_vector(dimension: int, seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dimension).astype(np.float32)
    return vector / np.linalg.norm(vector)


def run_block(
    conn: psycopg.Connection[Any], block: str, dimension: int, sparse: SparseVector | None = None
) -> int:
    """Run each statement with $1 (and $2) bound; return how many SELECTs returned rows."""
    query = unit_vector(dimension, seed=7)
    selects = 0
    for statement in statements(block):
        sql_text = statement.replace("$1", "%(q)s").replace("$2", "%(s)s")
        cursor = conn.execute(sql_text, {"q": query, "s": sparse})
        if statement.upper().startswith(("SELECT", "WITH")):
            assert cursor.rowcount > 0 or cursor.fetchall(), f"no rows from {statement}"
            selects += 1
    return selects


@pytest.fixture(scope="module")
def cookbook(
    services: ServiceHandle, tiny_bge_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceHandle]:
    """The README's collection `songs` (1024-d BGE-shaped model) filled through a real job,
    a worker serving its model, and the user's own table `songs(song_id, title, artist)`."""
    with services.engine.begin() as conn:
        manifest = register_model_dir(conn, tiny_bge_dir)
    create_collection(services.engine, "songs", manifest.manifest_id)
    settings = services.settings.model_copy(update={"model_dir": tiny_bge_dir})
    worker = start_worker(settings, tmp_path_factory.mktemp("cookbook-logs"), name="bge-worker")
    try:
        corpus = load_demo_corpus()[::2]  # both languages
        items = [
            {"id": doc_id, "text": text, "metadata": {"lang": doc_id.split("-")[0]}}
            for doc_id, text in corpus
        ]
        job = services.wait_job(services.submit("songs", items).json()["job_id"])
        assert job["status"] == "completed", job

        def hnsw_built() -> bool:
            with services.engine.connect() as conn:
                valid = conn.exec_driver_sql(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid"
                    " WHERE x.relname = %(name)s",
                    {"name": hnsw_index_name("vectors_songs")},
                ).scalar()
            return bool(valid)

        # The worker builds the collection's HNSW index CONCURRENTLY after the load; a README
        # snippet's own CREATE INDEX CONCURRENTLY beside it can deadlock with it.
        services.wait_until(hnsw_built, 120, "the worker's HNSW index on vectors_songs")
        with psycopg.connect(libpq_url(settings.require_database_url()), autocommit=True) as c:
            c.execute("CREATE TABLE songs (song_id text PRIMARY KEY, title text, artist text)")
            with c.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO songs VALUES (%s, %s, %s)",
                    [
                        (doc_id, text[:20], f"artist {i % 7}")
                        for i, (doc_id, text) in enumerate(corpus)
                    ],
                )
        yield services
    finally:
        worker.stop()


def _runbook_table(conn: psycopg.Connection[Any], schema: str, phase: str) -> None:
    """The runbook's `songs(id, lyrics, embedding vector(312))` as a migration leaves it in
    that phase, built with the migration's own DDL."""
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("SET search_path = {}, public").format(sql.Identifier(schema)))
    conn.execute(
        "CREATE TABLE songs (id bigint PRIMARY KEY, lyrics text NOT NULL, embedding vector(312))"
    )
    rows = [(i, f"歌词 {i}", unit_vector(312, i)) for i in range(50)]
    with conn.cursor() as cursor:
        cursor.executemany("INSERT INTO songs VALUES (%s, %s, %s)", rows)
    if phase == "before":
        return
    migration = Migration(
        name="docs", table_schema=schema, table_name="songs", id_column="id", id_type="bigint",
        text_column="lyrics", legacy_column="embedding", new_column="embedding_1024",
        manifest_id="docs-manifest", dimension=1024, chunk_size=10, status="running",
        phase="keyset", checkpoint=None, cut_over=False, rows_total=50, rows_embedded=0,
        chunks_done=0, step_token=None, error=None,
    )  # fmt: skip
    for statement in start_statements(migration):
        conn.execute(statement)
    with conn.cursor() as cursor:
        cursor.executemany(
            "UPDATE songs SET embedding_1024 = %s, embedding_1024_manifest = 'docs-manifest'"
            " WHERE id = %s",
            [(unit_vector(1024, 1000 + i), i) for i in range(0, 50, 2)],
        )
    if phase == "after":
        for statement in swap_statements(migration, to_cut_over=True):
            conn.execute(statement)
        conn.execute("DELETE FROM songs WHERE embedding IS NULL")


def _hybrid_table(conn: psycopg.Connection[Any], services: ServiceHandle, m3_dir: Path) -> int:
    """The README's `products` collection on the tiny BGE-M3: rows with unit vectors and random
    lexical weights (the SQL is under test, not the model). Returns the vocabulary size."""
    with services.engine.begin() as sa_conn:
        manifest = register_model_dir(sa_conn, m3_dir)
    create_collection(services.engine, "products", manifest.manifest_id)
    assert manifest.vocab_size is not None
    rng = np.random.default_rng(5)
    conn.execute("TRUNCATE vectors_products")
    with conn.cursor().copy(
        "COPY vectors_products (id, text, embedding, sparse_embedding, manifest_id, content_hash)"
        " FROM STDIN"
    ) as copy:
        for i in range(60):
            tokens = rng.choice(np.arange(4, 40), size=6, replace=False)
            weights = {
                int(t): float(w) for t, w in zip(tokens, rng.uniform(0.1, 1, 6), strict=True)
            }
            sparse = SparseVector(weights, manifest.vocab_size)
            vector = unit_vector(manifest.dimension, 500 + i)
            copy.write_row((f"sku-{i}", f"product {i}", vector, sparse, manifest.manifest_id, b"h"))
    return manifest.vocab_size


def _chunks_table(conn: psycopg.Connection[Any], services: ServiceHandle) -> None:
    """The cookbook's chunking collection `manuals` (the BGE-shaped model of `songs`): ten
    documents of six chunks with unit vectors (the SQL is under test, not the model)."""
    manifest_id = services.get("/v1/collections/songs").json()["manifest_id"]
    create_collection(services.engine, "manuals", manifest_id, Chunking(200, 20))
    conn.execute("TRUNCATE vectors_manuals")
    with conn.cursor().copy(
        "COPY vectors_manuals (id, chunk_no, span_start, span_end, text, embedding, manifest_id,"
        " content_hash) FROM STDIN"
    ) as copy:
        for doc in range(10):
            for chunk in range(6):
                vector = unit_vector(1024, 900 + doc * 6 + chunk)
                span = (chunk * 180, chunk * 180 + 200)
                text = f"manual {doc}, passage {chunk}"
                copy.write_row((f"manual-{doc}", chunk, *span, text, vector, manifest_id, b"h"))


@pytest.mark.parametrize("example", SQL_BLOCKS, ids=[ex.where for ex in SQL_BLOCKS])
def test_sql_example_runs(
    example: Example, cookbook: ServiceHandle, request: pytest.FixtureRequest
) -> None:
    where, fixture, block = example.where, str(example.fixture), example.code
    url = libpq_url(cookbook.settings.require_database_url())
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        if fixture == "cookbook":
            dimension = 1024
        elif fixture == "chunks":
            request.getfixturevalue("manuals_table")
            dimension = 1024
        elif fixture == "hybrid":
            vocab_size = request.getfixturevalue("products_table")
            query = SparseVector({5: 0.8, 9: 0.5, 17: 0.3}, vocab_size)
            assert run_block(conn, block, 32, query) > 0, f"{where} ran no query"
            return
        else:
            phase = fixture.removeprefix("runbook-")
            assert phase in {"before", "during", "after"}, f"{where}: unknown fixture {fixture}"
            _runbook_table(conn, f"docs_{phase}", phase)
            dimension = 312 if phase == "before" else 1024
        assert run_block(conn, block, dimension) > 0, f"{where} ran no query"


def test_the_docs_have_the_cookbook_recipes() -> None:
    cookbook_sql = " ".join(ex.code for ex in SQL_BLOCKS if ex.fixture == "cookbook")
    for needle in (
        "<#>", "<=>", "hnsw.ef_search", "hnsw.iterative_scan", "JOIN songs",
        "halfvec_ip_ops", "binary_quantize",
    ):  # fmt: skip
        assert needle in cookbook_sql, needle
    hybrid_sql = " ".join(ex.code for ex in SQL_BLOCKS if ex.fixture == "hybrid")
    for needle in ("sparse_embedding <#> $2", "FULL JOIN", "row_number()", "0.3 *"):
        assert needle in hybrid_sql, needle
    assert len(SQL_BLOCKS) >= 10


@pytest.fixture(scope="module")
def user_shell(
    cookbook: ServiceHandle, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str]]:
    """A working directory laid out as after `embedq demo` (its exported model) and the
    environment its `export` line sets."""
    workdir = tmp_path_factory.mktemp("user")
    models = workdir / ".embedq" / "demo" / "models"
    models.mkdir(parents=True)
    (models / "all-minilm-l6-v2").symlink_to(minilm_dir, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDQ_")}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "EMBEDQ_API_URL": cookbook.api_url,
            "EMBEDQ_KEY": cookbook.api_key,
            "DATABASE_URL": libpq_url(cookbook.settings.require_database_url()),
            "REDIS_URL": str(cookbook.settings.redis_url),
        }
    )
    return workdir, env


@pytest.fixture(scope="module")
def manuals_table(cookbook: ServiceHandle) -> None:
    """The chunking examples' `manuals` collection, loaded once (as `products_table`)."""
    with psycopg.connect(libpq_url(cookbook.settings.require_database_url()), autocommit=True) as c:
        register_vector(c)
        _chunks_table(c, cookbook)


@pytest.fixture(scope="module")
def products_table(cookbook: ServiceHandle, tiny_m3_dir: Path) -> int:
    """The hybrid examples' `products` collection, loaded once: a worker's maintenance thread
    builds its HNSW index CONCURRENTLY after the load, and a second TRUNCATE meeting that build
    is a deadlock Postgres resolves by failing one of them. Returns the vocabulary size."""
    with psycopg.connect(libpq_url(cookbook.settings.require_database_url()), autocommit=True) as c:
        register_vector(c)
        return _hybrid_table(c, cookbook, tiny_m3_dir)


@pytest.fixture(scope="module")
def products_worker(
    cookbook: ServiceHandle,
    products_table: int,
    tiny_m3_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ChildProcess]:
    """The hybrid examples' `products` collection with a worker of its BGE-M3-shaped model."""
    settings = cookbook.settings.model_copy(update={"model_dir": tiny_m3_dir})
    worker = start_worker(settings, tmp_path_factory.mktemp("m3-logs"), name="m3-worker")
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def reranker_worker(
    cookbook: ServiceHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChildProcess]:
    """A worker of a tiny random-weight BERT-shaped reranker, exported under the source name
    the docs' rerank example uses (BAAI/bge-reranker-v2-m3): its scores mean nothing, the
    request and answer are under test."""
    source = build_bert_reranker(tmp_path_factory.mktemp("src") / "reranker", RERANK_TEXTS)
    out = tmp_path_factory.mktemp("onnx") / "reranker"
    options = ExportOptions(source_id="BAAI/bge-reranker-v2-m3")
    manifest = export_model(str(source), out, options, engine_config())
    settings = cookbook.settings.model_copy(update={"model_dir": out})
    worker = start_worker(settings, tmp_path_factory.mktemp("rerank-logs"), name="rerank-worker")
    redis = make_redis(cookbook.settings)
    try:
        cookbook.wait_until(
            lambda: bool(redis.exists(serving_key(manifest.manifest_id))), 120, "the reranker"
        )
        yield worker
    finally:
        worker.stop()
        redis.close()


@pytest.mark.parametrize("example", SHELL_BLOCKS, ids=[ex.where for ex in SHELL_BLOCKS])
def test_shell_and_python_example_runs(
    example: Example, user_shell: tuple[Path, dict[str, str]], request: pytest.FixtureRequest
) -> None:
    workdir, env = user_shell
    if example.fixture == "hybrid-stack":
        request.getfixturevalue("products_worker")
    if example.fixture == "rerank-stack":
        request.getfixturevalue("reranker_worker")
    command = (
        [sys.executable, "-c", example.code]
        if example.lang == "python"
        else ["bash", "-euo", "pipefail", "-c", example.code]
    )
    result = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{example.where} exited {result.returncode}:\n{output}"
    assert '"detail"' not in result.stdout, f"{example.where} got an error answer:\n{output}"


def test_every_example_the_docs_mark_runs_somewhere() -> None:
    """Blocks on `demo` are the quickstart's first command, which tests/e2e/test_demo.py runs;
    every other marked block is collected above."""
    collected = {ex.key for ex in SQL_BLOCKS + SHELL_BLOCKS}
    for ex in all_examples():
        if ex.fixture == "demo":
            assert ex.code.strip() == 'python -m pip install -e ".[demo]" && embedq demo', ex.where
        elif ex.fixture is not None:
            assert ex.key in collected, ex.where
