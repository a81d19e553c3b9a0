"""A BGE-M3-shaped model (tiny, random weights) through real processes: a worker writes dense
vectors and lexical weights (sparsevec, top 256) in one upsert, builds both HNSW indexes, and
the API searches in dense, sparse and hybrid mode. Recall figures come from a deterministic toy
model on a labelled set where exact words matter; they say nothing about BGE-M3's quality."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from api.fleet import QueryAdmission, embed_on_fleet
from embedq_core.catalog import create_collection, register_model_dir
from embedq_core.collection_index import hnsw_index_name, sparse_index_name
from embedq_core.db import libpq_url
from embedq_core.manifest import ModelManifest
from embedq_core.query_protocol import QueryReply
from embedq_core.queueing import make_async_redis
from embedq_core.sparse_vectors import STORED_SPARSE_TOKENS
from ops.data.corpus import load_demo_corpus
from ops.devstack.processes import start_worker
from tests.exact_words import exact_word_rows, exact_word_texts
from tests.support import ServiceHandle, engine_config
from workers.engine import Embedder

COLLECTION = "parts"
TABLE = f"vectors_{COLLECTION}"


@dataclass
class Loaded:
    services: ServiceHandle
    manifest: ModelManifest
    rows: list[dict[str, Any]]
    ids: dict[str, str]  # passage text -> id
    long_text: str


def _long_text() -> str:
    """More distinct words (tokens of the toy vocabulary) than a row keeps."""
    texts = [*exact_word_texts(), *(text for _, text in load_demo_corpus())]
    words = list(dict.fromkeys(w for t in texts for w in t.split()))[:400]
    assert len(words) > STORED_SPARSE_TOKENS + 100
    return " ".join(words)


@pytest.fixture(scope="module")
def loaded(
    services: ServiceHandle, tiny_m3_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loaded]:
    with services.engine.begin() as conn:
        manifest = register_model_dir(conn, tiny_m3_dir)
    create_collection(services.engine, COLLECTION, manifest.manifest_id)
    settings = services.settings.model_copy(update={"model_dir": tiny_m3_dir})
    worker = start_worker(settings, tmp_path_factory.mktemp("m3-logs"), name="m3-worker")
    try:
        rows = exact_word_rows()
        passages = list(dict.fromkeys(t for r in rows for t in [*r["pos"], *r["neg"]]))
        ids = {text: f"p{i}" for i, text in enumerate(passages)}
        items = [{"id": ids[t], "text": t} for t in passages]
        items.append({"id": "long", "text": _long_text()})
        job = services.wait_job(services.submit(COLLECTION, items).json()["job_id"])
        assert job["status"] == "completed", job
        yield Loaded(services, manifest, rows, ids, _long_text())
    finally:
        worker.stop()


def _stored_sparse(loaded: Loaded) -> dict[str, dict[int, float]]:
    url = libpq_url(loaded.services.settings.require_database_url())
    with psycopg.connect(url) as conn:
        register_vector(conn)
        rows = conn.execute(f"SELECT id, sparse_embedding FROM {TABLE}").fetchall()
    return {r[0]: dict(zip(r[1].indices(), r[1].values(), strict=True)) for r in rows}


def _search(loaded: Loaded, query: str, **body: Any) -> list[dict[str, Any]]:
    response = loaded.services.post(
        f"/v1/collections/{COLLECTION}/search", {"query": query, **body}
    )
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["hits"]
    return hits


def test_lexical_weights_stored_beside_the_vector(loaded: Loaded, tiny_m3_dir: Path) -> None:
    with loaded.services.engine.connect() as conn:
        column_type = conn.exec_driver_sql(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            f" WHERE attrelid = '{TABLE}'::regclass AND attname = 'sparse_embedding'"
        ).scalar_one()
    assert column_type == f"sparsevec({loaded.manifest.vocab_size})"
    stored = _stored_sparse(loaded)
    embedder = Embedder.from_model_dir(tiny_m3_dir, engine_config())
    texts = list(loaded.ids)[:20]
    result = embedder.embed(texts)
    assert result.sparse is not None
    for text, weights in zip(texts, result.sparse, strict=True):
        row = stored[loaded.ids[text]]
        assert set(row) == set(weights)
        assert max(abs(row[t] - w) for t, w in weights.items()) <= 0.02
    (long_weights,) = embedder.embed([loaded.long_text]).sparse or []
    assert len(long_weights) > STORED_SPARSE_TOKENS
    assert len(stored["long"]) == STORED_SPARSE_TOKENS  # the cut: its largest weights
    top = sorted(long_weights, key=lambda t: -long_weights[t])[:STORED_SPARSE_TOKENS]
    assert len(set(top) & set(stored["long"])) >= STORED_SPARSE_TOKENS - 5


def test_both_hnsw_indexes_are_built_and_usable(loaded: Loaded) -> None:
    import time

    names = [hnsw_index_name(TABLE), sparse_index_name(TABLE)]
    deadline = time.monotonic() + 60
    with loaded.services.engine.connect() as conn:
        while True:
            valid = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid"
                " WHERE x.relname = ANY(%(names)s) AND i.indisvalid",
                {"names": names},
            ).scalar_one()
            conn.rollback()
            if valid == 2:
                break
            assert time.monotonic() < deadline, "the worker did not build both indexes"
            time.sleep(0.3)
        conn.exec_driver_sql("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.exec_driver_sql(
                f"EXPLAIN SELECT id FROM {TABLE}"
                f" ORDER BY sparse_embedding <#> '{{5:1}}/{loaded.manifest.vocab_size}'"
                " LIMIT 5"
            )
        )
    assert sparse_index_name(TABLE) in plan, plan


def test_hybrid_recall_at_least_dense_on_exact_words(loaded: Loaded) -> None:
    recall: dict[str, list[float]] = {"dense": [], "sparse": [], "hybrid": []}
    for row in loaded.rows:
        relevant = {loaded.ids[t] for t in row["pos"]}
        for mode in recall:
            hits = _search(loaded, row["query"], mode=mode, k=10)
            recall[mode].append(len(relevant & {h["id"] for h in hits}) / len(relevant))
    means = {mode: float(np.mean(values)) for mode, values in recall.items()}
    print(f"recall@10 over {len(loaded.rows)} queries through HTTP: {means}")
    assert means["hybrid"] >= means["dense"], means
    assert means["sparse"] >= 0.9, means  # exact words: the lexical arm finds them


def test_sparse_scores_are_lexical_inner_products(loaded: Loaded, tiny_m3_dir: Path) -> None:
    stored = _stored_sparse(loaded)
    query = loaded.rows[0]["query"]
    embedder = Embedder.from_model_dir(tiny_m3_dir, engine_config())
    (weights,) = embedder.embed([query], input_type="query").sparse or []
    hits = _search(loaded, query, mode="sparse", k=10, exact=True)
    truth = {i: sum(w * row.get(t, 0.0) for t, w in weights.items()) for i, row in stored.items()}
    for hit in hits:
        assert abs(hit["score"] - truth[hit["id"]]) <= 0.02 * max(1.0, truth[hit["id"]])
    best = sorted(truth, key=lambda i: -truth[i])[0]
    assert hits[0]["id"] == best


def test_weighted_fusion(loaded: Loaded) -> None:
    query = loaded.rows[3]["query"]
    dense = _search(loaded, query, mode="dense", k=5, exact=True)
    assert len(dense) == 5, (
        "the collection must answer with k hits for the checks below to mean anything"
    )
    dense_only = _search(
        loaded, query, mode="hybrid", fusion="weighted", dense_weight=1, sparse_weight=0, k=5,
        exact=True,
    )  # fmt: skip
    assert [h["id"] for h in dense_only] == [h["id"] for h in dense]
    np.testing.assert_allclose([h["score"] for h in dense_only], [h["score"] for h in dense])
    mixed = _search(loaded, query, mode="hybrid", fusion="weighted", sparse_weight=0.3, k=5)
    scores = [h["score"] for h in mixed]
    assert len(mixed) == 5 and scores == sorted(scores, reverse=True)
    rrf = _search(loaded, query, mode="hybrid", k=5)
    assert len(rrf) == 5 and all(0 < h["score"] <= 2 / 61 for h in rrf)


def test_sparse_modes_are_refused_on_a_dense_collection(loaded: Loaded) -> None:
    services = loaded.services
    for mode in ("sparse", "hybrid"):
        response = services.post("/v1/collections/docs/search", {"query": "hi", "mode": mode})
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", "mode"] and "dense-only" in error["msg"]
    zero = services.post(
        f"/v1/collections/{COLLECTION}/search",
        {"query": "hi", "mode": "hybrid", "fusion": "weighted", "dense_weight": 0,
         "sparse_weight": 0},
    )  # fmt: skip
    assert zero.status_code == 422 and zero.json()["detail"][0]["loc"] == ["body", "sparse_weight"]
    unknown = services.post(f"/v1/collections/{COLLECTION}/search", {"query": "hi", "mode": "x"})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "mode"]


def test_live_query_path_returns_lexical_weights(loaded: Loaded, tiny_m3_dir: Path) -> None:
    settings = loaded.services.settings

    async def ask() -> QueryReply:
        redis = make_async_redis(settings)
        try:
            return await embed_on_fleet(
                redis,
                QueryAdmission(settings.max_waiting_queries_per_model),
                settings,
                loaded.manifest.manifest_id,
                ["warranty for cable"],
                "query",
            )
        finally:
            await redis.aclose()

    reply = asyncio.run(ask())
    local = Embedder.from_model_dir(tiny_m3_dir, engine_config()).embed(
        ["warranty for cable"], input_type="query"
    )
    assert reply.sparse is not None and local.sparse is not None
    assert set(reply.sparse[0]) == set(local.sparse[0]) and len(reply.sparse[0]) == 3


def test_embeddings_endpoint_returns_sparsevec_text(loaded: Loaded) -> None:
    from pgvector import SparseVector

    services = loaded.services
    body = {"model": COLLECTION, "input": ["warranty for cable"], "input_type": "query"}
    plain = services.post("/v1/embeddings", body).json()
    assert "sparse_embedding" not in plain["data"][0]  # the OpenAI shape, unless asked
    data = services.post("/v1/embeddings", {**body, "sparse": True}).json()["data"][0]
    weights = SparseVector.from_text(data["sparse_embedding"])
    assert weights.dimensions() == loaded.manifest.vocab_size and len(weights.indices()) == 3
    with services.engine.connect() as conn:  # usable as is for the README's $2
        top = conn.exec_driver_sql(
            f"SELECT id FROM {TABLE} ORDER BY sparse_embedding <#> %(s)s::sparsevec LIMIT 1",
            {"s": data["sparse_embedding"]},
        ).scalar_one()
    assert top in {*loaded.ids.values(), "long"}
    refused = services.post("/v1/embeddings", {"model": "docs", "input": "hi", "sparse": True})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "sparse"]


def test_a_chunking_collection_stores_weights_per_chunk_and_searches_documents(
    loaded: Loaded,
) -> None:
    """Documents of eight catalogue passages each, cut into small windows: every chunk has its
    own lexical weights, sparse search answers with the document holding a code, and hybrid
    has it among its documents."""
    services = loaded.services
    created = services.post(
        "/v1/collections",
        {
            "name": "partsdocs",
            "manifest_id": loaded.manifest.manifest_id,
            "chunking": {"max_tokens": 24, "overlap_tokens": 4},
        },
    )
    assert created.status_code == 201, created.text
    passages = list(loaded.ids)
    documents = {f"doc{d}": ". ".join(passages[d * 8 : d * 8 + 8]) for d in range(6)}
    items = [{"id": doc_id, "text": text} for doc_id, text in documents.items()]
    job = services.wait_job(services.submit("partsdocs", items).json()["job_id"])
    assert job["status"] == "completed" and job["chunks"] > 12, job
    with services.engine.connect() as conn:
        missing = conn.exec_driver_sql(
            "SELECT count(*) FROM vectors_partsdocs WHERE sparse_embedding IS NULL"
        ).scalar_one()
    assert missing == 0
    for row in loaded.rows[:8]:
        holder = next(d for d, text in documents.items() if row["pos"][0] in text)
        sparse = _search_collection(services, "partsdocs", row["query"], mode="sparse", k=3)
        assert sparse[0]["id"] == holder, (row["query"], sparse)
        # The toy model's dense arm is noise: fused, the holder is among the three documents.
        hybrid = _search_collection(services, "partsdocs", row["query"], mode="hybrid", k=3)
        assert holder in {h["id"] for h in hybrid}, (row["query"], hybrid)
        for hits in (sparse, hybrid):
            assert all(h["chunk_no"] is not None for h in hits)
            assert len({h["id"] for h in hits}) == len(hits)  # one hit per document


def _search_collection(
    services: ServiceHandle, collection: str, query: str, **body: Any
) -> list[dict[str, Any]]:
    response = services.post(f"/v1/collections/{collection}/search", {"query": query, **body})
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["hits"]
    return hits
