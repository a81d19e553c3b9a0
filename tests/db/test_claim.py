"""A claim starts a queued job, and takes a running job's batch without touching the job's row:
every batch's write transaction updates that row last, so a claim that updated it too would wait
on the commit of another batch (the one written behind the engine, or another worker's)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from embedq_core.catalog import create_collection, register_model_dir
from embedq_core.db import libpq_url, make_engine
from embedq_core.lifecycle.claims import claim_batch
from embedq_core.lifecycle.jobs import NewItem, create_job
from ops.devstack.stack import EmbeddedStack


def _status(conn: psycopg.Connection[tuple[str]], job_id: str) -> str:
    row = conn.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row[0]


@pytest.mark.usefixtures("reconciler_paused")
def test_a_claim_starts_the_job_and_never_waits_on_the_job_row(
    stack: EmbeddedStack, minilm_dir: Path
) -> None:
    database_url = stack.settings().require_database_url()
    engine = make_engine(database_url, pool_size=1)
    with engine.begin() as conn:
        manifest = register_model_dir(conn, minilm_dir)
    collection = create_collection(engine, "claims", manifest.manifest_id)
    items = [NewItem(f"c{i}", f"claim text {i}", {}) for i in range(3)]
    job_id, batches = create_job(engine, collection, items, 1, 10**9)
    engine.dispose()
    assert batches == 3
    job = str(job_id)

    with (
        psycopg.connect(libpq_url(database_url), autocommit=True) as claimer,
        psycopg.connect(libpq_url(database_url), autocommit=True) as writer,
    ):
        assert _status(claimer, job) == "queued"
        first = claim_batch(claimer, job, 0, "worker-a", delivered=True)
        assert first is not None and [i.external_id for i in first.items] == ["c0"]
        assert _status(claimer, job) == "running"

        # Another batch's write transaction holds the job row, as finish_batch leaves it until
        # its commit. The claim must not wait for it (the old claim updated the row: it would
        # fail here on the lock timeout).
        claimer.execute("SET lock_timeout = '2s'")
        with writer.transaction():
            writer.execute("UPDATE jobs SET done = done, updated_at = now() WHERE id = %s", (job,))
            second = claim_batch(claimer, job, 1, "worker-b", delivered=True)
        assert second is not None and [i.external_id for i in second.items] == ["c1"]
        assert (second.collection, second.vector_table) == ("claims", collection.vector_table)
        assert second.manifest_id == manifest.manifest_id
        assert _status(claimer, job) == "running"
