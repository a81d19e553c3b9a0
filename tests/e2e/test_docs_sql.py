"""Every SQL snippet in the README and the runbook runs against a real Postgres + pgvector.

A ```sql block runs on the fixture named by a `<!-- docs-sql: NAME -->` line just before it
(README blocks default to the cookbook's `songs` collection). `$1` is bound to a unit query
vector of the fixture's dimension, `$2` (the `hybrid` fixture: a BGE-M3-shaped collection
`products`) to a sparse query vector; every SELECT must return rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector import SparseVector
from pgvector.psycopg import register_vector
from psycopg import sql

from embedq_core.catalog import create_collection, register_model_dir
from embedq_core.collection_index import hnsw_index_name
from embedq_core.db import libpq_url
from migrations.reembed.ddl import start_statements, swap_statements
from migrations.reembed.state import Migration
from ops.data.corpus import load_demo_corpus
from ops.devstack.processes import start_worker
from tests.support import ServiceHandle

ROOT = Path(__file__).resolve().parents[2]
BLOCK_RE = re.compile(
    r"(?:<!-- docs-sql: (?P<fixture>[\w-]+) -->\n)?```(?P<lang>sql|python)\n(?P<body>.*?)```", re.S
)


def doc_blocks(path: Path, lang: str, default_fixture: str) -> list[tuple[str, str, str]]:
    """(where, fixture, code) of each block of that language."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in BLOCK_RE.finditer(text):
        if match["lang"] == lang:
            line = text.count("\n", 0, match.start("body")) + 1
            fixture = match["fixture"] or default_fixture
            blocks.append((f"{path.name}:{line}", fixture, match["body"]))
    return blocks


SQL_BLOCKS = doc_blocks(ROOT / "README.md", "sql", "cookbook") + doc_blocks(
    ROOT / "ops" / "RUNBOOK.md", "sql", "runbook-missing-fixture"
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


@pytest.mark.parametrize(("where", "fixture", "block"), SQL_BLOCKS, ids=[b[0] for b in SQL_BLOCKS])
def test_sql_snippet_runs(
    where: str, fixture: str, block: str, cookbook: ServiceHandle, tiny_m3_dir: Path
) -> None:
    url = libpq_url(cookbook.settings.require_database_url())
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        if fixture == "cookbook":
            dimension = 1024
        elif fixture == "hybrid":
            vocab_size = _hybrid_table(conn, cookbook, tiny_m3_dir)
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
    cookbook_sql = " ".join(block for _, fixture, block in SQL_BLOCKS if fixture == "cookbook")
    for needle in (
        "<#>", "<=>", "hnsw.ef_search", "hnsw.iterative_scan", "JOIN songs",
        "halfvec_ip_ops", "binary_quantize",
    ):  # fmt: skip
        assert needle in cookbook_sql, needle
    hybrid_sql = " ".join(block for _, fixture, block in SQL_BLOCKS if fixture == "hybrid")
    for needle in ("sparse_embedding <#> $2", "FULL JOIN", "row_number()", "0.3 *"):
        assert needle in hybrid_sql, needle
    assert len(SQL_BLOCKS) >= 10


def test_python_query_vector_recipe_runs(
    cookbook: ServiceHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    (code,) = [
        block
        for _, _, block in doc_blocks(ROOT / "README.md", "python", "")
        if "vectors_songs" in block
    ]
    monkeypatch.setenv("EMBEDQ_API_URL", cookbook.api_url)
    monkeypatch.setenv("EMBEDQ_KEY", cookbook.api_key)
    monkeypatch.setenv("DATABASE_URL", libpq_url(cookbook.settings.require_database_url()))
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    rows = namespace["rows"]
    assert len(rows) == 5
    scores = [row[2] for row in rows]
    assert scores == sorted(scores, reverse=True) and -1.0 <= scores[-1] <= scores[0] <= 1.0
