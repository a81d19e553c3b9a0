"""Writes behind the engine: the next batch is claimed and embedded while the last one is still
being written (claiming ahead, one more is claimed while the engine runs), and a worker killed
with batches pending loses nothing and writes nothing twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import psycopg
import pytest
from sqlalchemy import text

from embedq_core.db import libpq_url
from ops.data.corpus import load_demo_corpus
from tests.support import WRITE_GATE, PrivatePipeline, gate_writes_and_audit, writes_waiting

ITEMS_PER_TASK = 8
BATCHES = 5


def _claimed_batches(pipeline: PrivatePipeline, job_id: str) -> set[int]:
    with pipeline.handle.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT batch_no FROM job_batches WHERE job_id = :j AND claimed_at IS NOT NULL"),
            {"j": job_id},
        ).all()
    return {r[0] for r in rows}


@pytest.mark.parametrize("claim_ahead", [False, True], ids=["write-behind", "claim-ahead"])
def test_the_next_batch_is_embedded_while_one_is_written_and_a_kill_loses_nothing(
    private_pipeline: Callable[..., PrivatePipeline], claim_ahead: bool
) -> None:
    # Lanes: batches the worker holds (claimed and locked) while the first write waits.
    lanes = 3 if claim_ahead else 2
    pipeline = private_pipeline(
        "ahead" if claim_ahead else "behind",
        claim_ahead=claim_ahead,
        items_per_task=ITEMS_PER_TASK,
        coalesce_below_items=0,  # one batch per delivery: the overlap is what is tested here
        requeue_grace_s=1.0,
        reconcile_interval_s=0.5,
    )
    gate_writes_and_audit(pipeline)
    corpus = [t for _, t in load_demo_corpus()]
    items = [{"id": f"w{i}", "text": corpus[i]} for i in range(ITEMS_PER_TASK * BATCHES)]
    url = libpq_url(pipeline.handle.settings.require_database_url())
    with psycopg.connect(url, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(%s)", (WRITE_GATE,))
        response = pipeline.handle.submit(pipeline.collection, items)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        worker = pipeline.start_worker()
        # Batch 0's write waits at the gate; the worker has meanwhile claimed and embedded batch
        # 1 (and, claiming ahead, batch 2 on the third lane), their writes queued behind, and
        # dated a claim for the next batch while it waits for a lane.
        pipeline.wait_until(lambda: writes_waiting(pipeline) == 1, 60, "a write at the gate")
        pipeline.wait_until(
            lambda: _claimed_batches(pipeline, job_id) == set(range(lanes + 1)),
            60,
            f"batches 0 to {lanes} claimed",
        )
        # An attempt is counted when the engine starts on a batch: the engine thread may still
        # be on batch 1 when batch 3's claim is dated.
        pipeline.wait_until(
            lambda: pipeline.items_sql(job_id, "attempts = 1") == lanes * ITEMS_PER_TASK,
            60,
            f"batches 0 to {lanes - 1} embedded",
        )
        assert pipeline.items_sql(job_id, "status = 'pending'") == len(items)
        worker.kill()
        pipeline.wait_until(lambda: writes_waiting(pipeline) == 0, 30, "the dead session gone")
        gate.execute("SELECT pg_advisory_unlock(%s)", (WRITE_GATE,))

    # Nothing of the dead worker's survives but its claims: the reconciler of a new worker
    # re-sends every batch it held, by the grace rule, within seconds.
    pipeline.start_worker()
    status = pipeline.handle.wait_job(job_id, timeout_s=120)
    assert (status["status"], status["done"], status["failed"]) == ("completed", len(items), 0)
    audit = f"vectors_{pipeline.collection}_writes"
    with pipeline.handle.engine.connect() as conn:
        writes: Counter[int] = Counter(
            dict(conn.execute(text(f"SELECT id, count(*) FROM {audit} GROUP BY id")).all()).values()
        )
        stored = conn.execute(
            text(f"SELECT count(*) FROM vectors_{pipeline.collection}")
        ).scalar_one()
    assert stored == len(items)
    # Each item written once: the killed writes died uncommitted (their audit rows with them).
    assert writes == {1: len(items)}, writes
    # The batches the dead worker embedded (written, or queued behind) spent an attempt each
    # time; none spent more.
    assert pipeline.items_sql(job_id, "attempts = 2") >= lanes * ITEMS_PER_TASK
    assert pipeline.items_sql(job_id, "attempts > 2") == 0
