"""Text -> HTTP API -> Redis -> Celery worker -> pgvector, on real processes and real weights."""

from __future__ import annotations

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from embedq_core.db import libpq_url
from embedq_core.manifest import ModelManifest
from embedq_core.task_batches import task_numbers
from ops.data.corpus import load_demo_corpus
from ops.devstack.bundled_model import bundled_model_source
from tests.support import ServiceHandle


def _stored(services: ServiceHandle, ids: list[str]) -> dict[str, tuple[np.ndarray, str, str]]:
    with psycopg.connect(libpq_url(services.settings.require_database_url())) as conn:
        register_vector(conn)
        rows = conn.execute(
            "SELECT id, embedding, manifest_id, text FROM vectors_docs WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    return {r[0]: (r[1].to_numpy().astype(np.float32), r[2], r[3]) for r in rows}


def test_job_is_embedded_into_pgvector_like_sentence_transformers(
    services: ServiceHandle, minilm_manifest: ModelManifest
) -> None:
    corpus = load_demo_corpus()[:120:3] + load_demo_corpus()[150::4]
    items = [
        {"id": f"pipe-{doc_id}", "text": text, "metadata": {"n": i}}
        for i, (doc_id, text) in enumerate(corpus)
    ]
    response = services.submit("docs", items)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["total"] == len(items)
    settings = services.settings
    tasks = task_numbers(
        [i["text"] for i in items], settings.items_per_task, settings.tokens_per_task
    )
    assert accepted["batches"] == max(tasks) + 1

    job = services.wait_job(accepted["job_id"])
    assert job["status"] == "completed", job
    assert (job["done"], job["failed"], job["errors"]) == (len(items), 0, [])

    stored = _stored(services, [i["id"] for i in items])
    assert len(stored) == len(items)
    for item in items:
        vector, manifest_id, text = stored[item["id"]]
        assert vector.shape == (minilm_manifest.dimension,) == (384,)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4
        assert manifest_id == minilm_manifest.manifest_id
        assert text == item["text"]

    from sentence_transformers import SentenceTransformer

    reference_model = SentenceTransformer(str(bundled_model_source()), device="cpu")
    reference = reference_model.encode(
        [i["text"] for i in items], normalize_embeddings=True, batch_size=16
    )
    ours = np.stack([stored[i["id"]][0] for i in items])
    cosines = np.sum(ours * reference, axis=1)
    assert cosines.min() >= 0.9999, (cosines.min(), items[int(cosines.argmin())]["text"])


def test_resubmitting_the_same_ids_updates_rows_in_place(services: ServiceHandle) -> None:
    first = services.submit("docs", [{"id": "same-1", "text": "The cat sleeps."}])
    services.wait_job(first.json()["job_id"])
    second = services.submit("docs", [{"id": "same-1", "text": "猫在睡觉。"}])
    job = services.wait_job(second.json()["job_id"])
    assert job["status"] == "completed"
    with psycopg.connect(libpq_url(services.settings.require_database_url())) as conn:
        rows = conn.execute("SELECT text FROM vectors_docs WHERE id = 'same-1'").fetchall()
    assert rows == [("猫在睡觉。",)]


def test_similarity_query_in_sql_ranks_paraphrase_first(services: ServiceHandle) -> None:
    texts = {
        "rain": "It is going to rain heavily tomorrow afternoon.",
        "pizza": "I would like to order a large pepperoni pizza.",
        "stocks": "The stock market fell sharply this morning.",
    }
    response = services.submit("docs", [{"id": f"sim-{k}", "text": v} for k, v in texts.items()])
    services.wait_job(response.json()["job_id"])
    from workers.engine import Embedder, EngineConfig

    assert services.settings.model_dir is not None
    query = (
        Embedder.from_model_dir(
            services.settings.model_dir, EngineConfig.from_settings(services.settings)
        )
        .embed(["Can I get a big pizza with pepperoni delivered?"], input_type="query")
        .vectors[0]
    )
    with psycopg.connect(libpq_url(services.settings.require_database_url())) as conn:
        register_vector(conn)
        rows = conn.execute(
            "SELECT id, -(embedding <#> %s) FROM vectors_docs WHERE id LIKE 'sim-%%' "
            "ORDER BY embedding <#> %s",
            (query, query),
        ).fetchall()
    assert rows[0][0] == "sim-pizza"
    assert rows[0][1] > rows[1][1] + 0.2
