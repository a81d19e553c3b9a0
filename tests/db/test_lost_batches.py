"""The reconciler's rule for a first send whose message a worker took and died with before its
claim was recorded, on the real Postgres: a batch sent after it was delivered, so it left Redis
too. Only what Postgres's clock proves counts: a later batch of the same job, or a job created
after this job's send was recorded; never a claim made by coalescing."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from embedq_core.catalog import create_collection, register_model_dir
from embedq_core.db import libpq_url, make_engine
from embedq_core.lifecycle.claims import claim_batch
from embedq_core.lifecycle.delivery import lost_batches, record_enqueued, record_resent
from embedq_core.lifecycle.jobs import NewItem, create_job
from embedq_core.lifecycle.presence import record_presence
from embedq_core.queueing import FIRST_SEND_NO
from ops.devstack.stack import EmbeddedStack
from tests.support import make_manifest_variant

Batch = tuple[uuid.UUID, int]


@pytest.mark.usefixtures("reconciler_paused")
def test_a_first_send_counts_as_taken_once_a_later_send_was_delivered(
    stack: EmbeddedStack, minilm_dir: Path, tmp_path: Path
) -> None:
    database_url = stack.settings().require_database_url()
    # A model of its own: evidence is per queue, and no other test's deliveries reach this one.
    model_dir = tmp_path / "model"
    make_manifest_variant(minilm_dir, model_dir, max_length=100)
    engine = make_engine(database_url, pool_size=1)
    with engine.begin() as conn:
        manifest = register_model_dir(conn, model_dir)
    collection = create_collection(engine, "lost_rule", manifest.manifest_id)

    def new_job(name: str, batches: int) -> uuid.UUID:
        items = [NewItem(f"{name}-{i}", f"text {i} of job {name}", {}) for i in range(batches)]
        job_id, made = create_job(engine, collection, items, 1, 10**9)
        assert made == batches
        return job_id

    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:

        def lost(grace_s: float = 0.0) -> set[Batch]:
            mine = {first, second, early, late}
            found = lost_batches(conn, grace_s=grace_s, unclaimed_s=3600, broker_wiped=False)
            return {(uuid.UUID(b.job_id), b.batch_no) for b in found} & {
                (job, n) for job in mine for n in range(3)
            }

        def deliver(batch: Batch, delivered: bool = True) -> None:
            claimed = claim_batch(conn, str(batch[0]), batch[1], "w", delivered=delivered)
            assert claimed is not None and len(claimed.items) == 1

        first = new_job("first", 3)
        # Created before `first`'s send is recorded: it may have been sent before `first`.
        early = new_job("early", 1)
        record_enqueued(conn, first)
        record_enqueued(conn, early)
        second = new_job("second", 2)
        record_enqueued(conn, second)
        late = new_job("late", 1)
        record_enqueued(conn, late)

        # Every message waits in the queue: nothing is lost.
        assert lost() == set()

        # A worker coalescing a batch claims it before its message arrives: that says nothing
        # about the queue. The claimed batch itself is lost by the grace rule (no lock held).
        deliver((late, 0), delivered=False)
        assert lost() == {(late, 0)}

        # `early` was delivered, but its job was created before `first` was recorded as sent:
        # Postgres cannot tell which was sent first, so `first` still counts as queued.
        deliver((early, 0))
        assert lost() == {(late, 0), (early, 0)}

        # A later batch of the same job was delivered: the batch before it left Redis first.
        deliver((first, 1))
        assert lost() == {(late, 0), (early, 0), (first, 0), (first, 1)}
        # ...and only once the grace has passed since that delivery: the worker that took the
        # earlier message may still be recording its claim.
        assert lost(grace_s=3600) == set()

        # A job created after `first`'s send was recorded was delivered: every batch of
        # `first` left Redis before it, and so did the first batch of its own job.
        deliver((second, 1))
        assert lost() == {
            (late, 0),
            (early, 0),
            (first, 0),
            (first, 1),
            (first, 2),
            (second, 0),
            (second, 1),
        }
    engine.dispose()


@pytest.mark.usefixtures("reconciler_paused")
def test_a_resent_message_counts_as_taken_once_a_message_queued_behind_it_was_delivered(
    stack: EmbeddedStack, minilm_dir: Path, tmp_path: Path
) -> None:
    """A re-send goes ahead of every first send and behind earlier re-sends: a worker that took
    a first send, or a later re-send known by its send number, took the re-sent message first.
    An earlier re-send, or a message that does not say which send it is, proves nothing."""
    database_url = stack.settings().require_database_url()
    model_dir = tmp_path / "model"
    make_manifest_variant(minilm_dir, model_dir, max_length=101)
    engine = make_engine(database_url, pool_size=1)
    with engine.begin() as conn:
        manifest = register_model_dir(conn, model_dir)
    collection = create_collection(engine, "lost_resent_rule", manifest.manifest_id)

    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:

        def new_job(name: str) -> uuid.UUID:
            job_id, made = create_job(
                engine, collection, [NewItem(name, f"text {name}", {})], 1, 10**9
            )
            assert made == 1
            record_enqueued(conn, job_id)
            return job_id

        def resend(job_id: uuid.UUID) -> int:
            return record_resent(conn, str(job_id), [0])[0]

        def deliver(job_id: uuid.UUID, send_no: int | None) -> None:
            claimed = claim_batch(conn, str(job_id), 0, "w", delivered=True, send_no=send_no)
            assert claimed is not None and len(claimed.items) == 1

        def is_lost(job_id: uuid.UUID, grace_s: float = 0.0) -> bool:
            found = lost_batches(conn, grace_s=grace_s, unclaimed_s=3600, broker_wiped=False)
            return (str(job_id), 0) in {(b.job_id, b.batch_no) for b in found}

        older, resent, old_style, later, first = (
            new_job(n) for n in ("older", "resent", "old-style", "later", "first")
        )
        # Each was taken once by a worker that died (claimed, then re-sent): their messages
        # now wait at the front of the queue, `older`'s ahead of `resent`'s.
        for job in (older, resent, old_style, later):
            deliver(job, FIRST_SEND_NO)
        older_send = resend(older)
        resent_send = resend(resent)
        assert resent_send == older_send == 2
        resend(old_style)
        later_send = resend(later)
        assert not is_lost(resent)

        # The re-send queued ahead of it was delivered: nothing about `resent`'s message.
        deliver(older, older_send)
        assert not is_lost(resent)
        # A message that does not say which send it is (an older version sent it).
        deliver(old_style, None)
        assert not is_lost(resent)
        # A later re-send's batch delivered by an older message of its own: no proof either.
        deliver(later, 1)
        assert not is_lost(resent)

        # The later re-send itself was delivered: `resent`'s message left Redis before it,
        # once the grace has passed (its worker may still be recording its claim).
        deliver(later, later_send)
        assert not is_lost(resent, grace_s=3600)
        assert is_lost(resent)

        # The same from a first send, which waits behind every re-send.
        again = resend(resent)
        assert again == 3
        assert not is_lost(resent)
        deliver(first, FIRST_SEND_NO)
        assert is_lost(resent)
        # Claimed since its last send: the grace rule's case, no longer this one's.
        deliver(resent, again)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT delivered_send FROM job_batches WHERE job_id = %s AND batch_no = 0",
                (resent,),
            )
            assert cur.fetchone() == (again,)
    engine.dispose()


@pytest.mark.usefixtures("reconciler_paused")
def test_a_send_counts_as_taken_once_a_worker_of_its_model_sat_idle_for_the_grace(
    stack: EmbeddedStack, minilm_dir: Path, tmp_path: Path
) -> None:
    """A worker whose consumer held no task for the grace after a send was blocked on the
    queue: the message would have reached it. A busy worker, a worker of another model, or one
    idle only since the send, proves nothing."""
    database_url = stack.settings().require_database_url()
    engine = make_engine(database_url, pool_size=1)
    manifests = []
    for n in (102, 103):
        model_dir = tmp_path / f"model-{n}"
        make_manifest_variant(minilm_dir, model_dir, max_length=n)
        with engine.begin() as conn:
            manifests.append(register_model_dir(conn, model_dir).manifest_id)
    collection = create_collection(engine, "lost_idle_rule", manifests[0])

    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        job_id, _ = create_job(engine, collection, [NewItem("only", "the last text", {})], 1, 10**9)
        record_enqueued(conn, job_id)

        def is_lost(grace_s: float = 0.0) -> bool:
            found = lost_batches(conn, grace_s=grace_s, unclaimed_s=3600, broker_wiped=False)
            return (str(job_id), 0) in {(b.job_id, b.batch_no) for b in found}

        assert not is_lost()
        record_presence(conn, "other-model:1", manifests[1], idle_for_s=3600.0)
        record_presence(conn, "busy:2", manifests[0], idle_for_s=None)
        record_presence(conn, "just-idle:3", manifests[0], idle_for_s=0.0)
        assert not is_lost()
        # Idle since before the send: the consumer was blocked on the queue ever since.
        record_presence(conn, "idle:4", manifests[0], idle_for_s=3600.0)
        assert is_lost()
        assert not is_lost(grace_s=3600)
        # A row holds the latest report only: once it says a task is held, it proves nothing.
        record_presence(conn, "idle:4", manifests[0], idle_for_s=None)
        assert not is_lost()
        conn.execute(
            "DELETE FROM worker_presence WHERE worker = ANY(%s)",
            (["other-model:1", "busy:2", "just-idle:3", "idle:4"],),
        )
    engine.dispose()
