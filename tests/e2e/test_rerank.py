"""POST /v1/rerank through the real API and a reranker worker process: the order and scores
are the torch reference's (FlagEmbedding's encoding, sigmoid as normalize=True); the shape is
the one Cohere, Jina and vLLM share; embedders and rerankers refuse each other's calls."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedq_core.manifest import ModelManifest
from embedq_core.query_protocol import serving_key
from embedq_core.queueing import make_redis
from ops.data.corpus import load_demo_corpus
from ops.devstack.processes import start_worker
from ops.export.model import ExportOptions, export_model
from tests.reranker_models import build_bert_reranker, reference_logits
from tests.support import ServiceHandle, engine_config

TEXTS = [text for _, text in load_demo_corpus()]
QUERY = "明天会下雨吗？"
DOCUMENTS = [TEXTS[i] for i in range(0, 60, 4)]


@pytest.fixture(scope="module")
def reranker(
    services: ServiceHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, ModelManifest]]:
    """A BERT-shaped reranker exported by our exporter and served by its own worker."""
    source = build_bert_reranker(tmp_path_factory.mktemp("src") / "reranker", TEXTS)
    out = tmp_path_factory.mktemp("onnx") / "reranker"
    manifest = export_model(str(source), out, ExportOptions(), engine_config())
    # FP32 execution: these tests compare with torch FP32 to 1e-4, and a random-weight model's
    # logits lie within hundredths of each other, which BF16 execution (the default on CPUs
    # with BF16 instructions) reorders.
    settings = services.settings.model_copy(update={"model_dir": out, "runtime": "onnxruntime-cpu"})
    worker = start_worker(settings, tmp_path_factory.mktemp("rerank-logs"), name="reranker")
    redis = make_redis(services.settings)
    try:
        services.wait_until(
            lambda: bool(redis.exists(serving_key(manifest.manifest_id))),
            120,
            "the reranker worker to serve",
        )
        yield source, manifest
    finally:
        worker.stop()
        redis.close()


def test_rerank_returns_the_reference_order_and_scores(
    services: ServiceHandle, reranker: tuple[Path, ModelManifest]
) -> None:
    source, manifest = reranker
    answer = services.post(
        "/v1/rerank", {"model": manifest.manifest_id, "query": QUERY, "documents": DOCUMENTS}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Embedq-Manifest-Id"] == manifest.manifest_id
    body = answer.json()
    logits = np.array(reference_logits(source, [(QUERY, d) for d in DOCUMENTS], 512))
    expected = 1 / (1 + np.exp(-logits))
    assert [r["index"] for r in body["results"]] == list(np.argsort(-expected, kind="stable"))
    scores = {r["index"]: r["relevance_score"] for r in body["results"]}
    np.testing.assert_allclose([scores[i] for i in range(len(DOCUMENTS))], expected, atol=1e-4)
    assert all(r["document"]["text"] == DOCUMENTS[r["index"]] for r in body["results"])
    assert body["model"] == manifest.manifest_id and body["usage"]["total_tokens"] > len(DOCUMENTS)


def test_cohere_clients_v1_and_v2_read_our_answers(
    services: ServiceHandle, reranker: tuple[Path, ModelManifest]
) -> None:
    """Cohere's official client, both versions, pointed at the API: it parses our answer into
    the reference order and scores (v1 posts to /v1/rerank, v2 to /v2/rerank)."""
    import cohere

    source, manifest = reranker
    logits = np.array(reference_logits(source, [(QUERY, d) for d in DOCUMENTS], 512))
    expected = 1 / (1 + np.exp(-logits))
    top = [int(i) for i in np.argsort(-expected, kind="stable")[:5]]
    v1 = cohere.Client(api_key=services.api_key, base_url=services.api_url, timeout=60)
    answer = v1.rerank(
        model=manifest.manifest_id, query=QUERY, documents=DOCUMENTS, top_n=5,
        return_documents=True,
    )  # fmt: skip
    assert [r.index for r in answer.results] == top
    np.testing.assert_allclose(
        [r.relevance_score for r in answer.results], expected[top], atol=1e-4
    )
    assert [r.document.text if r.document else None for r in answer.results] == [
        DOCUMENTS[i] for i in top
    ]
    v2 = cohere.ClientV2(api_key=services.api_key, base_url=services.api_url, timeout=60)
    answer2 = v2.rerank(model=manifest.manifest_id, query=QUERY, documents=DOCUMENTS, top_n=5)
    assert [r.index for r in answer2.results] == top
    np.testing.assert_allclose(
        [r.relevance_score for r in answer2.results], expected[top], atol=1e-4
    )
    # Errors reach the client as its own exception with our status.
    with pytest.raises(cohere.core.ApiError) as refused:
        v2.rerank(model="no-such-model", query=QUERY, documents=DOCUMENTS)
    assert refused.value.status_code == 404
    stranger = cohere.ClientV2(api_key="not-a-key", base_url=services.api_url, timeout=60)
    with pytest.raises(cohere.core.ApiError) as unauthorized:
        stranger.rerank(model=manifest.manifest_id, query=QUERY, documents=DOCUMENTS)
    assert unauthorized.value.status_code == 401


def test_top_n_objects_and_no_documents(
    services: ServiceHandle, reranker: tuple[Path, ModelManifest]
) -> None:
    _, manifest = reranker
    full = services.post(
        "/v1/rerank", {"model": manifest.source, "query": QUERY, "documents": DOCUMENTS}
    ).json()
    answer = services.post(
        "/v1/rerank",
        {
            "model": manifest.source,  # the source name reaches the newest served export
            "query": QUERY,
            "documents": [{"text": d} for d in DOCUMENTS],
            "top_n": 3,
            "return_documents": False,
        },
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["index"] for r in results] == [r["index"] for r in full["results"][:3]]
    assert all("document" not in r for r in results)


def test_bad_requests_name_the_field(
    services: ServiceHandle, reranker: tuple[Path, ModelManifest], minilm_manifest: ModelManifest
) -> None:
    _, manifest = reranker
    cases = [
        ({"model": "no-such-model", "query": QUERY, "documents": ["a"]}, 404, "model"),
        ({"model": minilm_manifest.manifest_id, "query": QUERY, "documents": ["a"]}, 422, "model"),
        ({"model": manifest.manifest_id, "query": " ", "documents": ["a"]}, 422, "query"),
        ({"model": manifest.manifest_id, "query": QUERY, "documents": []}, 422, "documents"),
        (
            {"model": manifest.manifest_id, "query": QUERY, "documents": ["a"], "top_n": 0},
            422,
            "top_n",
        ),
    ]
    for body, status, field in cases:
        answer = services.post("/v1/rerank", body)
        assert answer.status_code == status, (body, answer.text)
        assert field in {str(p) for e in answer.json()["detail"] for p in e["loc"]}, answer.text
    embed = services.post("/v1/embeddings", {"model": manifest.manifest_id, "input": "x"})
    assert embed.status_code == 422 and "reranker" in embed.text
    # The worker registered the reranker's manifest; a collection cannot store its output.
    create = services.post(
        "/v1/collections", {"name": "scores", "manifest_id": manifest.manifest_id}
    )
    assert create.status_code == 422 and "reranker" in create.text


def test_search_reranks_its_candidates(
    services: ServiceHandle, reranker: tuple[Path, ModelManifest], minilm_manifest: ModelManifest
) -> None:
    source, manifest = reranker
    created = services.post(
        "/v1/collections", {"name": "rerankable", "manifest_id": minilm_manifest.manifest_id}
    )
    assert created.status_code in (200, 201), created.text
    items = [{"id": f"d{i}", "text": text} for i, text in enumerate(DOCUMENTS)]
    job = services.wait_job(services.submit("rerankable", items).json()["job_id"])
    assert job["status"] == "completed", job
    answer = services.post(
        "/v1/collections/rerankable/search",
        {
            "query": QUERY,
            "k": 5,
            "exact": True,
            "rerank": {"model": manifest.manifest_id, "candidates": len(DOCUMENTS)},
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    logits = np.array(reference_logits(source, [(QUERY, d) for d in DOCUMENTS], 512))
    expected = 1 / (1 + np.exp(-logits))
    best = list(np.argsort(-expected, kind="stable")[:5])
    assert [hit["id"] for hit in body["hits"]] == [f"d{i}" for i in best]
    np.testing.assert_allclose([h["rerank_score"] for h in body["hits"]], expected[best], atol=1e-4)
    assert all(-1 <= h["score"] <= 1 for h in body["hits"]), "the retrieval score is kept"
    assert body["rerank_model"] == manifest.manifest_id
    plain = services.post("/v1/collections/rerankable/search", {"query": QUERY, "k": 5}).json()
    assert all("rerank_score" not in hit for hit in plain["hits"]) and "rerank_model" not in plain
    few = services.post(
        "/v1/collections/rerankable/search",
        {"query": QUERY, "k": 5, "rerank": {"model": manifest.manifest_id, "candidates": 3}},
    )
    assert few.status_code == 422 and "candidates" in few.text


def test_search_of_a_chunking_collection_reranks_chunks_and_answers_with_documents(
    services: ServiceHandle, reranker: tuple[Path, ModelManifest], minilm_manifest: ModelManifest
) -> None:
    source, manifest = reranker
    created = services.post(
        "/v1/collections",
        {
            "name": "rerankdocs",
            "manifest_id": minilm_manifest.manifest_id,
            "chunking": {"max_tokens": 20, "overlap_tokens": 0},
        },
    )
    assert created.status_code == 201, created.text
    documents = {
        f"doc{d}": " ".join(DOCUMENTS[d * 4 : d * 4 + 4]) for d in range(len(DOCUMENTS) // 4)
    }
    items = [{"id": doc_id, "text": text} for doc_id, text in documents.items()]
    job = services.wait_job(services.submit("rerankdocs", items).json()["job_id"])
    assert job["status"] == "completed", job
    with services.engine.connect() as conn:
        chunks = conn.exec_driver_sql(
            "SELECT id, text FROM vectors_rerankdocs ORDER BY id, chunk_no"
        ).all()
    body = services.post(
        "/v1/collections/rerankdocs/search",
        {
            "query": QUERY,
            "k": 2,
            "exact": True,
            "rerank": {"model": manifest.manifest_id, "candidates": len(chunks)},
        },
    ).json()
    # Every chunk scored by the reranker; each document ranked by its best chunk's score.
    logits = np.array(reference_logits(source, [(QUERY, text) for _, text in chunks], 512))
    scores = 1 / (1 + np.exp(-logits))
    best: dict[str, float] = {}
    for (doc_id, _), score in zip(chunks, scores, strict=True):
        best[doc_id] = max(best.get(doc_id, 0.0), float(score))
    expected = sorted(best, key=lambda d: -best[d])[:2]
    assert [hit["id"] for hit in body["hits"]] == expected
    np.testing.assert_allclose(
        [hit["rerank_score"] for hit in body["hits"]], [best[d] for d in expected], atol=1e-4
    )
    assert all(hit["chunk_no"] is not None for hit in body["hits"])
