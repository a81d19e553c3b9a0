"""Idempotency, unchanged-text skipping, poison items and graceful shutdown, on real processes."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from sqlalchemy import text

from embedq_core.queueing import EMBED_BATCH_TASK, embed_queue, make_celery
from tests.support import PrivatePipeline, ServiceHandle


def _row(services: ServiceHandle, table: str, item_id: str) -> tuple[str, str, object]:
    with services.engine.connect() as conn:
        row = conn.execute(
            text(f"SELECT embedding::text, metadata::text, updated_at FROM {table} WHERE id = :id"),
            {"id": item_id},
        ).one()
    return row[0], row[1], row[2]


def test_unchanged_text_is_not_embedded_again_but_metadata_is_updated(
    services: ServiceHandle,
) -> None:
    first = services.submit(
        "docs", [{"id": "u1", "text": "西湖的风景很美。", "metadata": {"v": 1}}]
    )
    assert services.wait_job(first.json()["job_id"])["unchanged"] == 0
    vector_before, _, _ = _row(services, "vectors_docs", "u1")

    again = services.submit(
        "docs", [{"id": "u1", "text": "西湖的风景很美。", "metadata": {"v": 2}}]
    )
    job = services.wait_job(again.json()["job_id"])
    assert (job["status"], job["done"], job["unchanged"]) == ("completed", 1, 1)
    vector_after, metadata, _ = _row(services, "vectors_docs", "u1")
    assert vector_after == vector_before
    assert metadata == '{"v": 2}'

    changed = services.submit("docs", [{"id": "u1", "text": "西湖的风景四季都美。"}])
    job = services.wait_job(changed.json()["job_id"])
    assert (job["done"], job["unchanged"]) == (1, 0)
    assert _row(services, "vectors_docs", "u1")[0] != vector_before


def test_redelivered_batches_change_nothing(services: ServiceHandle) -> None:
    items = [{"id": f"redo-{i}", "text": f"Sentence number {i}."} for i in range(20)]
    response = services.submit("docs", items)
    job_id = response.json()["job_id"]
    job = services.wait_job(job_id)
    with services.engine.connect() as conn:
        stamps = conn.execute(
            text("SELECT sum(attempts), max(updated_at) FROM job_items WHERE job_id = :j"),
            {"j": job_id},
        ).one()
        manifest_id = conn.execute(
            text("SELECT manifest_id FROM jobs WHERE id = :j"), {"j": job_id}
        ).scalar_one()
    worker = next(c for c in services.children if c.name == "worker")
    already_done = "nothing pending (already done)"
    seen_before = worker.log_text().count(already_done)
    celery = make_celery(services.settings)
    sent = 0
    for _ in range(3):
        for batch_no in range(response.json()["batches"]):
            celery.send_task(
                EMBED_BATCH_TASK, args=[job_id, batch_no], queue=embed_queue(manifest_id)
            )
            sent += 1
    # Wait until the worker has really handled every duplicate, then check it changed nothing.
    deadline = time.monotonic() + 60
    while worker.log_text().count(already_done) < seen_before + sent:
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.1)
    assert services.get(f"/v1/jobs/{job_id}").json() == job
    with services.engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT sum(attempts), max(updated_at) FROM job_items WHERE job_id = :j"),
                {"j": job_id},
            ).one()
            == stamps
        )
        assert (
            conn.execute(
                text("SELECT count(*) FROM vectors_docs WHERE id LIKE 'redo-%'")
            ).scalar_one()
            == 20
        )


def test_poison_item_fails_alone_with_its_reason(services: ServiceHandle) -> None:
    from embedq_core.catalog import create_collection

    with services.engine.connect() as conn:
        manifest_id = conn.execute(
            text("SELECT manifest_id FROM collections WHERE name = 'docs'")
        ).scalar_one()
    create_collection(services.engine, "poison", manifest_id)
    with services.engine.begin() as conn:
        # A constraint the writer cannot satisfy for one id: a deterministic, non-transient error.
        conn.execute(text("ALTER TABLE vectors_poison ADD CONSTRAINT no_pill CHECK (id <> 'pill')"))
    items = [{"id": i, "text": f"text of {i}"} for i in ("ok-1", "pill", "ok-2")]
    response = services.submit("poison", items)
    job = services.wait_job(response.json()["job_id"], timeout_s=60)
    assert (job["status"], job["done"], job["failed"]) == ("completed_with_errors", 2, 1)
    assert job["errors"][0]["id"] == "pill"
    assert "no_pill" in job["errors"][0]["error"]
    with services.engine.connect() as conn:
        attempts = dict(
            conn.execute(
                text("SELECT external_id, attempts FROM job_items WHERE job_id = :j"),
                {"j": response.json()["job_id"]},
            ).all()
        )
        stored = conn.execute(text("SELECT id FROM vectors_poison ORDER BY id")).scalars().all()
    assert attempts == {"ok-1": 2, "pill": 2, "ok-2": 2}  # failed once whole, then item by item
    assert stored == ["ok-1", "ok-2"]


def test_sigterm_finishes_the_current_batch_then_exits(
    private_pipeline: Callable[..., PrivatePipeline],
) -> None:
    pipeline = private_pipeline("graceful", items_per_task=300)
    items = [
        {"id": f"g{i}", "text": f"Graceful shutdown sentence {i} of many."} for i in range(900)
    ]
    response = pipeline.handle.submit("graceful", items)
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    worker = pipeline.start_worker()
    in_flight = "status = 'pending' AND attempts > 0"
    pipeline.wait_until(lambda: pipeline.items_sql(job_id, in_flight) > 0, 60, "a claimed batch")
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.popen.wait(timeout=60) == 0, worker.log_tail()
    # The batch it held was finished and committed, not abandoned half-way.
    assert pipeline.items_sql(job_id, in_flight) == 0
    done_before_restart = pipeline.items_sql(job_id, "status = 'done'")
    assert done_before_restart % 300 == 0 and done_before_restart >= 300
    pipeline.start_worker()
    job = pipeline.handle.wait_job(job_id)
    assert (job["status"], job["done"]) == ("completed", 900)
    assert pipeline.items_sql(job_id, "attempts <> 1") == 0  # nothing was done twice
