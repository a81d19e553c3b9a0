"""Chunking collections through the real API, worker processes, Postgres and MiniLM: documents
stored as token windows, replaced whole, searched as documents."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import text

from embedq_core.catalog import Chunking
from ops.data.corpus import load_bench_corpus
from tests.support import PrivatePipeline, ServiceHandle, fail_first_write_of

# Chinese characters are one MiniLM token each, and sentence ends fall where windows are cut:
# a chunk's text tokenises to exactly the window's tokens, so its vector can be checked against
# the engine's vector of that text.
SENTENCES = [
    "春天来了，公园里的花都开了。",
    "孩子们在草地上放风筝！",
    "老人坐在长椅上晒太阳；",
    "小狗追着蝴蝶跑来跑去。",
    "湖边有人在钓鱼，也有人在划船？",
    "傍晚的风吹过树林，很凉快。",
]


def _document(sentences: int, offset: int = 0) -> str:
    return "".join(SENTENCES[(offset + i) % len(SENTENCES)] for i in range(sentences))


def _create(services: ServiceHandle, name: str, **chunking: int) -> dict[str, Any]:
    manifest_id = services.get("/v1/collections/docs").json()["manifest_id"]
    response = services.post(
        "/v1/collections", {"name": name, "manifest_id": manifest_id, "chunking": chunking}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _chunks(services: ServiceHandle, table: str, doc_id: str) -> list[dict[str, Any]]:
    with services.engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT chunk_no, text, span_start, span_end, metadata, seq,"
                f" embedding::text AS e FROM {table} WHERE id = :id ORDER BY chunk_no"
            ),
            {"id": doc_id},
        ).mappings()
        return [dict(r) for r in rows]


def _embed(services: ServiceHandle, texts: list[str]) -> np.ndarray:
    response = services.post(
        "/v1/embeddings", {"model": "docs", "input": texts, "input_type": "passage"}
    )
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


def _vectors(rows: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[float(x) for x in r["e"].strip("[]").split(",")] for r in rows])


def test_a_document_is_stored_as_its_chunks_and_a_new_submission_replaces_them_all(
    services: ServiceHandle,
) -> None:
    created = _create(services, "chunked", max_tokens=40, overlap_tokens=0)
    assert created["chunking"] == {"max_tokens": 40, "overlap_tokens": 0}
    long_doc, short_doc = _document(30), _document(1, 3)
    job = services.wait_job(
        services.submit(
            "chunked",
            [
                {"id": "a", "text": long_doc, "metadata": {"lang": "zh"}},
                {"id": "b", "text": short_doc},
            ],
        ).json()["job_id"]
    )
    rows_a, rows_b = (
        _chunks(services, "vectors_chunked", "a"),
        _chunks(services, "vectors_chunked", "b"),
    )
    assert (job["status"], job["total"], job["done"]) == ("completed", 2, 2), job["errors"]
    assert job["chunks"] == len(rows_a) + len(rows_b) and len(rows_b) == 1
    assert len(rows_a) > 5
    assert [r["chunk_no"] for r in rows_a] == list(range(len(rows_a)))
    assert "".join(r["text"] for r in rows_a) == long_doc  # no overlap: the spans tile it
    assert all(long_doc[r["span_start"] : r["span_end"]] == r["text"] for r in rows_a)
    assert all(r["text"][-1] in "。！；？" for r in rows_a)  # cut at sentence ends
    assert all(r["metadata"] == {"lang": "zh"} for r in rows_a)
    # Each chunk holds the engine's vector of its own text.
    cosines = np.sum(_vectors(rows_a) * _embed(services, [r["text"] for r in rows_a]), axis=1)
    assert cosines.min() >= 0.9999

    # The document shrinks: exactly its new chunks remain; an unchanged one embeds nothing.
    shrunk = _document(9, 1)
    again = services.wait_job(
        services.submit("chunked", [{"id": "a", "text": shrunk}, {"id": "b", "text": short_doc}])
        .json()["job_id"]
    )  # fmt: skip
    new_rows = _chunks(services, "vectors_chunked", "a")
    assert (again["done"], again["unchanged"], again["chunks"]) == (2, 1, len(new_rows))
    assert "".join(r["text"] for r in new_rows) == shrunk
    assert len(new_rows) < len(rows_a)
    seqs = {r["seq"] for r in new_rows}
    assert len(seqs) == 1 and seqs.pop() > rows_a[0]["seq"]
    assert _chunks(services, "vectors_chunked", "b")[0]["e"] == rows_b[0]["e"]


def test_chunking_that_the_model_cannot_read_is_refused_and_a_collection_keeps_its_own(
    services: ServiceHandle,
) -> None:
    manifest_id = services.get("/v1/collections/docs").json()["manifest_id"]
    too_long = services.post(
        "/v1/collections",
        {"name": "toolong", "manifest_id": manifest_id, "chunking": {"max_tokens": 255}},
    )
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["body", "chunking"]
    assert "1..254" in too_long.json()["detail"][0]["msg"]  # MiniLM: 256 less 2 specials
    overlap = services.post(
        "/v1/collections",
        {
            "name": "badoverlap",
            "manifest_id": manifest_id,
            "chunking": {"max_tokens": 50, "overlap_tokens": 50},
        },
    )
    assert overlap.status_code == 422
    _create(services, "kept", max_tokens=100, overlap_tokens=10)
    other = services.post(
        "/v1/collections",
        {"name": "kept", "manifest_id": manifest_id, "chunking": {"max_tokens": 200}},
    )
    assert other.status_code == 409
    assert "max_tokens=100" in other.json()["detail"][0]["msg"]
    again = services.post(
        "/v1/collections",
        {
            "name": "kept",
            "manifest_id": manifest_id,
            "chunking": {"max_tokens": 100, "overlap_tokens": 10},
        },
    )
    assert again.status_code == 201


# A long English document with one fact in its middle, and others like its beginning.
FACT = "The lighthouse keeper's cat is named Biscuit and sleeps on the lamp room stairs."
QUESTION = "What is the name of the lighthouse keeper's cat?"


def _filler(start: int, count: int) -> str:
    english = [t for _, t in load_bench_corpus() if t.isascii() and len(t) > 40]
    return " ".join(english[(start + i) % len(english)] for i in range(count))


def test_an_answer_in_the_middle_of_a_long_document_is_found_only_with_chunking(
    services: ServiceHandle,
) -> None:
    _create(services, "manual", max_tokens=64, overlap_tokens=10)
    manifest_id = services.get("/v1/collections/docs").json()["manifest_id"]
    flat = services.post("/v1/collections", {"name": "manual_flat", "manifest_id": manifest_id})
    assert flat.status_code == 201
    with_fact = _filler(0, 25) + " " + FACT + " " + _filler(25, 25)
    # Other documents about lighthouses and cats at their start, where a truncated document's
    # vector looks: without chunking, the model reads these beginnings only.
    others = [
        "Lighthouse keepers lived alone on rocky islands. " + _filler(60 + 10 * i, 20)
        for i in range(4)
    ] + ["Cats are popular pets and many are named after food. " + _filler(120, 20)]
    items = [{"id": "with-fact", "text": with_fact}] + [
        {"id": f"other-{i}", "text": t} for i, t in enumerate(others)
    ]
    for collection in ("manual", "manual_flat"):
        job = services.wait_job(services.submit(collection, items).json()["job_id"])
        assert job["status"] == "completed"
    grouped = services.post("/v1/collections/manual/search", {"query": QUESTION, "k": 3}).json()
    best = grouped["hits"][0]
    assert best["id"] == "with-fact"
    assert FACT in best["text"]
    assert with_fact[best["span_start"] : best["span_end"]] == best["text"]
    assert len({hit["id"] for hit in grouped["hits"]}) == 3  # one hit per document
    flat_hits = services.post(
        "/v1/collections/manual_flat/search", {"query": QUESTION, "k": 3}
    ).json()["hits"]
    assert flat_hits[0]["id"] != "with-fact"  # truncated: the fact is past what MiniLM reads
    chunks = services.post(
        "/v1/collections/manual/search", {"query": QUESTION, "k": 10, "group": False}
    ).json()["hits"]
    assert len(chunks) == 10
    assert all(hit["chunk_no"] is not None for hit in chunks)
    assert len({hit["id"] for hit in chunks}) < 10  # several chunks of a document
    filtered = services.post(
        "/v1/collections/manual/search",
        {"query": QUESTION, "k": 3, "filter": {"absent": True}},
    ).json()["hits"]
    assert filtered == []


def test_concurrent_resubmissions_of_a_document_end_with_the_newest_ones_chunks_only(
    private_pipeline: Callable[..., PrivatePipeline],
) -> None:
    """Ten versions of one document of different lengths, each its own job, embedded by two
    workers in any order, one of them SIGKILLed mid-way: only the newest version's chunks
    remain."""
    pipeline = private_pipeline("chunkrace", chunking=Chunking(30, 5), coalesce_below_items=0)
    handle = pipeline.handle
    workers = [pipeline.start_worker(), pipeline.start_worker()]
    versions = [_document(3 + (7 * v) % 17, v) for v in range(10)]
    jobs = []
    for number, version in enumerate(versions):
        jobs.append(
            handle.submit("chunkrace", [{"id": "x", "text": version, "metadata": {"v": number}}])
            .json()["job_id"]
        )  # fmt: skip
        if number == 4:
            workers[0].kill()  # SIGKILL, mid-way through the versions
    pipeline.start_worker()
    finished = [handle.wait_job(job, timeout_s=180) for job in jobs]
    assert all(job["status"] == "completed" for job in finished)
    rows = _chunks(handle, "vectors_chunkrace", "x")
    newest = versions[-1]
    assert {r["metadata"]["v"] for r in rows} == {9}
    assert [r["chunk_no"] for r in rows] == list(range(len(rows)))
    rebuilt, end = "", 0
    for row in rows:
        rebuilt += newest[end : row["span_end"]]
        end = row["span_end"]
    assert rebuilt == newest


def test_an_older_version_delivered_after_the_newer_one_leaves_no_chunk(
    private_pipeline: Callable[..., PrivatePipeline],
) -> None:
    """The older submission's write fails first (a trigger), the newer one is stored, then the
    reconciler sends the older one again: it finds a newer document and writes nothing."""
    pipeline = private_pipeline("chunkorder", chunking=Chunking(30, 5), coalesce_below_items=0)
    handle = pipeline.handle
    fail_first_write_of(handle.engine, "vectors_chunkorder", "x")
    older_text, newer_text = _document(20), _document(4, 2)
    older = handle.submit("chunkorder", [{"id": "x", "text": older_text}]).json()["job_id"]
    newer = handle.submit("chunkorder", [{"id": "x", "text": newer_text}]).json()["job_id"]
    pipeline.start_worker()
    newer_job = handle.wait_job(newer)
    older_job = handle.wait_job(older)
    rows = _chunks(handle, "vectors_chunkorder", "x")
    assert newer_job["chunks"] == len(rows) >= 1
    assert (older_job["status"], older_job["done"], older_job["chunks"]) == ("completed", 1, 0)
    assert pipeline.items_sql(older, "attempts = 2") == 1  # failed once, then superseded
    rebuilt, end = "", 0
    for row in rows:
        rebuilt += newer_text[end : row["span_end"]]
        end = row["span_end"]
    assert rebuilt == newer_text
