"""Recovery that does not wait for an empty queue, a hung worker ended by its watchdog, and
transient database errors retried without spending a delivery attempt."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import pytest
import redis
from sqlalchemy import Engine, text

from embedq_core.catalog import create_collection, get_collection
from embedq_core.db import libpq_url
from embedq_core.lifecycle.jobs import NewItem, create_job
from embedq_core.queueing import (
    NEW_WORK_PRIORITY,
    RESEND_PRIORITY,
    SEND_NO_HEADER,
    embed_queue,
    priority_list,
    queue_depth,
)
from ops.data.corpus import load_demo_corpus
from ops.devstack.processes import ChildProcess
from tests.support import PrivatePipeline, ServiceHandle, fail_first_write_of
from workers.background.watchdog import EXIT_CODE

ITEMS_PER_JOB = 32
# The producer keeps at least this many batches queued: the queue never empties.
QUEUE_FLOOR = 6
MAX_STREAM_JOBS = 400
MAX_STREAM_S = 150.0


@dataclass
class Stream:
    """Submits jobs from a background thread whenever fewer than QUEUE_FLOOR batches are queued,
    until stopped or MAX_STREAM_JOBS / MAX_STREAM_S; samples the queue depth as it goes."""

    pipeline: PrivatePipeline
    queue: str
    job_ids: list[str] = field(default_factory=list)
    depths: list[tuple[float, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = redis.Redis.from_url(self.pipeline.handle.settings.require_redis_url())
        corpus = [t for _, t in load_demo_corpus()]
        started = time.monotonic()
        while (
            not self.stop.is_set()
            and len(self.job_ids) < MAX_STREAM_JOBS
            and time.monotonic() - started < MAX_STREAM_S
        ):
            depth = queue_depth(client, self.queue)
            self.depths.append((time.monotonic(), depth))
            if depth >= QUEUE_FLOOR:
                self.stop.wait(0.02)
                continue
            n = len(self.job_ids)
            items = [
                {"id": f"s{n}-{k}", "text": f"{corpus[(n * 7 + k) % len(corpus)]} ({n}.{k})"}
                for k in range(ITEMS_PER_JOB)
            ]
            response = self.pipeline.handle.submit(self.pipeline.collection, items)
            if response.status_code != 202:
                self.errors.append(response.text)
                return
            self.job_ids.append(response.json()["job_id"])
        client.close()

    def min_depth(self, since: float, until: float) -> int:
        return min(d for t, d in self.depths if since <= t <= until)


def _worker_name(worker: ChildProcess) -> str:
    return f"{socket.gethostname()}:{worker.popen.pid}"


def _batch_held_by(engine: Engine, worker: ChildProcess) -> tuple[str, int] | None:
    """A batch the worker has claimed and not finished: it is working on it right now."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT job_id::text, batch_no FROM job_batches"
                " WHERE claimed_by = :w AND finished_at IS NULL LIMIT 1"
            ),
            {"w": _worker_name(worker)},
        ).first()
    return None if row is None else (row[0], row[1])


def _finished(engine: Engine, job_id: str, batch_no: int) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT finished_at IS NOT NULL FROM job_batches"
                    " WHERE job_id = :j AND batch_no = :b"
                ),
                {"j": job_id, "b": batch_no},
            ).scalar_one()
        )


def test_lost_batches_recover_while_the_queue_never_empties(
    private_pipeline: Callable[..., PrivatePipeline],
) -> None:
    # The kill below can land after Redis handed the worker its next message and before it
    # recorded the claim (with writes behind the engine, while the batch it holds is still
    # being written). Every streamed job must still finish, with the default visibility
    # timeout (an hour): the later batches delivered to the other worker show it was taken.
    pipeline = private_pipeline(
        "steady", items_per_task=ITEMS_PER_JOB, requeue_grace_s=2.0, reconcile_interval_s=1.0
    )
    settings = pipeline.handle.settings
    # Grace, then at most one reconcile interval to notice, a pass, one batch already running
    # on the worker that takes the re-sent message (it jumps the backlog), and the batch itself.
    bound_s = settings.requeue_grace_s + 3 * settings.reconcile_interval_s + 10.0
    engine = pipeline.handle.engine
    fail_first_write_of(engine, "vectors_steady", "fails-once")
    with engine.connect() as conn:
        manifest_id = conn.execute(
            text("SELECT manifest_id FROM collections WHERE name = 'steady'")
        ).scalar_one()

    stream = Stream(pipeline, embed_queue(manifest_id))
    producer = threading.Thread(target=stream.run, name="stream", daemon=True)
    producer.start()
    try:
        doomed = pipeline.start_worker()
        pipeline.start_worker()

        # SIGKILL a worker while it holds a batch (again with a fresh worker if the batch
        # happened to finish between the look and the kill).
        for _ in range(10):
            pipeline.wait_until(
                lambda w=doomed: _batch_held_by(engine, w) is not None, 60, "a batch in flight"
            )
            held = _batch_held_by(engine, doomed)
            doomed.kill()
            killed_at = time.monotonic()
            if held is not None and not _finished(engine, *held):
                break
            doomed = pipeline.start_worker()
        else:
            pytest.fail("never caught a worker in the middle of a batch")
        killed = held

        # A delivery that fails: the batch's write raises once; Celery acks the failed message.
        marker = pipeline.handle.submit(
            "steady", [{"id": "fails-once", "text": "A text whose first write fails."}]
        )
        marker_job = marker.json()["job_id"]
        pipeline.wait_until(
            lambda: pipeline.items_sql(marker_job, "error IS NOT NULL") == 1,
            60,
            "the failed delivery",
        )
        failed_at = time.monotonic()

        pipeline.wait_until(lambda: _finished(engine, *killed), bound_s, "the killed batch")
        killed_recovered_s = time.monotonic() - killed_at
        pipeline.wait_until(
            lambda: _finished(engine, marker_job, 0), bound_s, "the failed delivery's batch"
        )
        failed_recovered_s = time.monotonic() - failed_at
        recovered_at = time.monotonic()
        assert not stream.errors, stream.errors
        assert producer.is_alive(), "the stream ended before recovery was shown"
        # The queue never emptied from the kill to the recovery: the old rule (re-send only
        # into an empty queue) could not have fired.
        assert stream.min_depth(killed_at, recovered_at) > 0
    finally:
        stream.stop.set()
        producer.join(timeout=30)

    print(
        f"recovered: killed batch {killed_recovered_s:.1f}s after the kill, failed delivery "
        f"{failed_recovered_s:.1f}s after the failure (bound {bound_s:.0f}s), "
        f"{len(stream.job_ids)} jobs streamed"
    )
    for job_id in [*stream.job_ids, marker_job]:
        job = pipeline.handle.wait_job(job_id, timeout_s=180)
        assert (job["status"], job["done"], job["failed"]) == ("completed", job["total"], 0)
    killed_job, killed_batch = killed
    # Its items count one attempt per engine run alone: two if the killed delivery had started
    # the engine on it alone, one if it died first or had it in a group of small batches (a
    # first-try group spends none).
    assert pipeline.items_sql(killed_job, f"batch_no = {killed_batch} AND attempts IN (1, 2)") > 0
    assert pipeline.items_sql(marker_job, "attempts = 2 AND error IS NULL") == 1


def _take_next_message(pipeline: PrivatePipeline, manifest_id: str) -> tuple[str, int]:
    """Pop the next new-work message off the queue, as a worker's BRPOP does, and drop it: a
    worker that took it and died before recording its claim. Returns its (job, batch)."""
    client = redis.Redis.from_url(pipeline.handle.settings.require_redis_url())
    try:
        raw = client.rpop(priority_list(embed_queue(manifest_id), NEW_WORK_PRIORITY))
    finally:
        client.close()
    assert isinstance(raw, bytes), "no message waiting"
    args = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
    return str(args[0]), int(args[1])


def test_a_message_taken_by_a_worker_that_died_before_its_claim_is_sent_again(
    private_pipeline: Callable[..., PrivatePipeline],
) -> None:
    # The default visibility timeout (an hour) stays: the backstop must not be what recovers
    # it. One batch per delivery, so no worker claims the lost batch by coalescing it either.
    pipeline = private_pipeline("taken", items_per_task=4, coalesce_below_items=0)
    settings = pipeline.handle.settings
    assert settings.visibility_timeout_s >= 3600
    engine = pipeline.handle.engine
    with engine.connect() as conn:
        manifest_id = conn.execute(
            text("SELECT manifest_id FROM collections WHERE name = 'taken'")
        ).scalar_one()
    corpus = [t for _, t in load_demo_corpus()]
    items = [{"id": f"t{i}", "text": corpus[i % len(corpus)]} for i in range(24)]
    job_id = pipeline.handle.submit("taken", items).json()["job_id"]
    assert _take_next_message(pipeline, manifest_id) == (job_id, 0)

    pipeline.start_worker()
    # The batches sent after it are delivered as usual.
    pipeline.wait_until(
        lambda: pipeline.items_sql(job_id, "status = 'done'") == 20, 120, "the other batches"
    )
    # Then the grace since those deliveries, a reconcile interval to notice, and the batch.
    bound_s = settings.requeue_grace_s + 3 * settings.reconcile_interval_s + 10.0
    job = pipeline.handle.wait_job(job_id, timeout_s=bound_s)
    assert (job["status"], job["done"], job["failed"]) == ("completed", 24, 0)
    with engine.connect() as conn:
        sends = conn.execute(
            text("SELECT array_agg(sends ORDER BY batch_no) FROM job_batches WHERE job_id = :j"),
            {"j": job_id},
        ).scalar_one()
    assert sends == [2, 1, 1, 1, 1, 1]  # the taken batch once more, by the reconciler
    # The dead worker never claimed it: the re-sent delivery is its first attempt.
    assert pipeline.items_sql(job_id, "batch_no = 0 AND attempts = 1") == 4


def test_a_resent_message_taken_by_a_worker_that_died_is_sent_again(
    private_pipeline: Callable[..., PrivatePipeline],
) -> None:
    """A re-sent message goes to the front of its queue; a worker that took it and died before
    its claim leaves a send that looks unclaimed. A first send delivered behind it proves it
    gone: the batch is sent again after the grace, not after the hour's backstop."""
    pipeline = private_pipeline("resent_taken", items_per_task=4, coalesce_below_items=0)
    settings = pipeline.handle.settings
    assert settings.visibility_timeout_s >= 3600
    engine = pipeline.handle.engine
    with engine.connect() as conn:
        collection = get_collection(conn, "resent_taken")
    assert collection is not None
    queue = embed_queue(collection.manifest_id)
    bound_s = settings.requeue_grace_s + 3 * settings.reconcile_interval_s + 10.0
    # Recorded and never enqueued (an API that died before the publish): the fleet's
    # reconciler sends it, at the front of a queue no worker serves yet.
    items = [NewItem(f"r{i}", f"A re-sent batch, item {i}.") for i in range(4)]
    lost_job, _ = create_job(engine, collection, items, 4, 10**9)
    client = redis.Redis.from_url(settings.require_redis_url())
    resends = priority_list(queue, RESEND_PRIORITY)

    def resent() -> bool:
        return int(client.llen(resends)) == 1

    try:
        pipeline.wait_until(resent, bound_s, "a re-send")
        raw = client.rpop(resends)
    finally:
        client.close()
    assert isinstance(raw, bytes)
    message = json.loads(raw)
    assert json.loads(base64.b64decode(message["body"]))[0] == [str(lost_job), 0]
    assert message["headers"][SEND_NO_HEADER] == 1

    later = pipeline.handle.submit("resent_taken", [{"id": "l0", "text": "Sent after it."}])
    later_job = later.json()["job_id"]
    pipeline.start_worker()
    job = pipeline.handle.wait_job(later_job, timeout_s=120)
    assert job["status"] == "completed"
    job = pipeline.handle.wait_job(str(lost_job), timeout_s=bound_s)
    assert (job["status"], job["done"], job["failed"]) == ("completed", 4, 0)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT job_id::text, sends, delivered_send FROM job_batches"
                " WHERE job_id IN (:lost, :later)"
            ),
            {"lost": lost_job, "later": later_job},
        ).all()
    # The lost batch's second send reached the worker; the later job's first send did.
    assert {r[0]: (r[1], r[2]) for r in rows} == {str(lost_job): (2, 2), later_job: (1, 0)}


def test_the_last_message_of_a_queue_taken_by_a_worker_that_died_is_sent_again(
    private_pipeline: Callable[..., PrivatePipeline],
) -> None:
    """Nothing is delivered behind the last message of a queue; a worker of its model that
    sits idle for the grace proves it gone (its consumer would have taken it)."""
    pipeline = private_pipeline("last_taken", items_per_task=4)
    settings = pipeline.handle.settings
    assert settings.visibility_timeout_s >= 3600
    with pipeline.handle.engine.connect() as conn:
        manifest_id = conn.execute(
            text("SELECT manifest_id FROM collections WHERE name = 'last_taken'")
        ).scalar_one()
    items = [{"id": f"t{i}", "text": f"The only batch, item {i}."} for i in range(4)]
    job_id = pipeline.handle.submit("last_taken", items).json()["job_id"]
    assert _take_next_message(pipeline, manifest_id) == (job_id, 0)

    worker = pipeline.start_worker()
    bound_s = settings.requeue_grace_s + 3 * settings.reconcile_interval_s + 10.0
    job = pipeline.handle.wait_job(job_id, timeout_s=60 + bound_s)
    assert (job["status"], job["done"], job["failed"]) == ("completed", 4, 0)
    with pipeline.handle.engine.connect() as conn:
        sends, idle = conn.execute(
            text(
                "SELECT b.sends, w.idle_since IS NOT NULL FROM job_batches b, worker_presence w"
                " WHERE b.job_id = :j AND w.worker = :w"
            ),
            {"j": job_id, "w": _worker_name(worker)},
        ).one()
    assert sends == 2  # once more, by the reconciler
    assert idle  # the worker reports itself idle again once the batch is done


def test_hung_batch_ends_its_worker_and_frees_its_lock(
    private_pipeline: Callable[..., PrivatePipeline],
) -> None:
    pipeline = private_pipeline("hang", task_time_limit_s=3.0, db_retry_timeout_s=2.0)
    url = libpq_url(pipeline.handle.settings.require_database_url())
    # Another session holds the table: the worker's write waits on the lock forever.
    with psycopg.connect(url) as holder:
        holder.execute("LOCK TABLE vectors_hang IN EXCLUSIVE MODE")
        response = pipeline.handle.submit(
            "hang", [{"id": f"h{i}", "text": f"Hung sentence {i}."} for i in range(4)]
        )
        job_id = response.json()["job_id"]
        hung = pipeline.start_worker()
        assert hung.popen.wait(timeout=60) == EXIT_CODE, hung.log_tail()
        assert "still running after task_time_limit_s=3.0" in hung.log_text()

        def lock_free() -> bool:
            with psycopg.connect(url, autocommit=True) as probe:
                row = probe.execute(
                    "SELECT pg_try_advisory_lock(hashtext(%s), 0)", (job_id,)
                ).fetchone()
                return bool(row and row[0])  # the session ends with the probe: lock released

        # Its Postgres session ends too, mid lock wait, and the batch lock with it, while the
        # table is still held.
        pipeline.wait_until(lock_free, 15, "the hung worker's batch lock to be released")
        holder.rollback()

    pipeline.start_worker()
    job = pipeline.handle.wait_job(job_id, timeout_s=60)
    assert (job["status"], job["done"]) == ("completed", 4)
    assert pipeline.items_sql(job_id, "attempts = 2") == 4  # the hung delivery, then the re-send


def test_transient_errors_retry_the_transaction_without_spending_an_attempt(
    services: ServiceHandle,
) -> None:
    with services.engine.connect() as conn:
        manifest_id = conn.execute(
            text("SELECT manifest_id FROM collections WHERE name = 'docs'")
        ).scalar_one()
    create_collection(services.engine, "transient", manifest_id)
    with services.engine.begin() as conn:
        for name in ("deadlock_once", "disconnect_once"):
            conn.execute(text(f"CREATE SEQUENCE {name}"))
        # The first write of one id fails as a deadlock victim would; the first write of
        # another loses its connection, as in a failover.
        conn.execute(
            text(
                "CREATE FUNCTION transient_errors() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN"
                " IF NEW.id = 'deadlock' AND nextval('deadlock_once') = 1 THEN"
                "   RAISE EXCEPTION 'injected deadlock' USING ERRCODE = 'deadlock_detected';"
                " END IF;"
                " IF NEW.id = 'disconnect' AND nextval('disconnect_once') = 1 THEN"
                "   PERFORM pg_terminate_backend(pg_backend_pid());"
                " END IF;"
                " RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER transient_errors BEFORE INSERT ON vectors_transient"
                " FOR EACH ROW EXECUTE FUNCTION transient_errors()"
            )
        )
    worker = next(c for c in services.children if c.name == "worker")
    log_before = len(worker.log_text())
    jobs = [
        services.submit(
            "transient", [{"id": i, "text": f"text of {i}"}, {"id": f"{i}-2", "text": "more"}]
        )
        for i in ("deadlock", "disconnect")
    ]
    for response in jobs:
        job_id = response.json()["job_id"]
        job = services.wait_job(job_id, timeout_s=60)
        assert (job["status"], job["done"], job["failed"]) == ("completed", 2, 0)
        with services.engine.connect() as conn:
            attempts = conn.execute(
                text("SELECT array_agg(attempts) FROM job_items WHERE job_id = :j"), {"j": job_id}
            ).scalar_one()
        assert attempts == [1, 1]  # retried within the delivery
    with services.engine.connect() as conn:
        fired = conn.execute(
            text(
                "SELECT (SELECT last_value FROM deadlock_once),"
                " (SELECT last_value FROM disconnect_once)"
            )
        ).one()
        written = conn.execute(text("SELECT count(*) FROM vectors_transient")).scalar_one()
    assert tuple(fired) == (2, 2)  # each failed once, then went through
    assert written == 4
    log = worker.log_text()[log_before:]
    assert "injected deadlock" in log and "DeadlockDetected" in log
    assert "terminating connection" in log or "consuming input failed" in log, log[-3000:]


def test_a_job_recorded_but_never_enqueued_is_sent_by_the_reconciler(
    services: ServiceHandle,
) -> None:
    # What the API leaves behind when it dies (or Redis refuses) between the commit and the
    # enqueue: the job and its batches in Postgres, no message anywhere.
    with services.engine.connect() as conn:
        collection = get_collection(conn, "docs")
    assert collection is not None
    items = [NewItem(f"never-sent-{i}", f"A job nobody enqueued, item {i}.") for i in range(20)]
    job_id, batches = create_job(services.engine, collection, items, 16, 10**9)
    assert batches == 2
    settings = services.settings
    job = services.wait_job(
        str(job_id), timeout_s=settings.requeue_grace_s + 3 * settings.reconcile_interval_s + 10
    )
    assert (job["status"], job["done"]) == ("completed", 20)
    with services.engine.connect() as conn:
        sends = conn.execute(
            text("SELECT array_agg(sends ORDER BY batch_no) FROM job_batches WHERE job_id = :j"),
            {"j": job_id},
        ).scalar_one()
    assert sends == [1, 1]  # one send each, by the reconciler
