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
from embedq_core.lifecycle.delivery import lost_batches, record_enqueued
from embedq_core.lifecycle.jobs import NewItem, create_job
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
