"""Schema migrations 0004 and later on a database that already has collections, vectors and jobs
in flight."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from sqlalchemy.engine import make_url

from embedq_core.lifecycle.delivery import adopt_unrecorded_jobs, lost_batches
from migrations.schema_upgrade import alembic_config
from ops.devstack.stack import EmbeddedStack

DB_NAME = "upgrade_0004"


@pytest.fixture
def database_url(stack: EmbeddedStack) -> Iterator[str]:
    """A database of its own on the session's Postgres, dropped afterwards."""
    server_url = stack.settings().require_database_url()
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    yield make_url(server_url).set(database=DB_NAME).render_as_string(hide_password=False)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


def _seed_0003(conn: psycopg.Connection[object]) -> tuple[uuid.UUID, uuid.UUID]:
    """What a database at 0003 holds: a collection with a vector, a job half done, a job done."""
    conn.execute(
        "INSERT INTO model_manifests (id, dimension, pooling, manifest)"
        " VALUES ('m', 3, 'mean', '{}')"
    )
    conn.execute(
        "INSERT INTO collections (name, manifest_id, dimension, vector_table)"
        " VALUES ('legacy', 'm', 3, 'vectors_legacy')"
    )
    conn.execute(
        """
        CREATE TABLE vectors_legacy (
            id text PRIMARY KEY, text text NOT NULL, metadata jsonb NOT NULL DEFAULT '{}',
            embedding vector(3) NOT NULL, manifest_id text NOT NULL REFERENCES model_manifests,
            content_hash bytea NOT NULL, truncated boolean NOT NULL DEFAULT false, job_id uuid,
            updated_at timestamptz NOT NULL DEFAULT now())
        """
    )
    conn.execute(
        "INSERT INTO vectors_legacy (id, text, embedding, manifest_id, content_hash)"
        " VALUES ('old', 'stored before', '[1,0,0]', 'm', %s)",
        (hashlib.sha256(b"stored before").digest(),),
    )
    running, finished = uuid.uuid4(), uuid.uuid4()
    conn.execute(
        "INSERT INTO jobs (id, collection, manifest_id, status, total, done, batches,"
        " enqueued_at, created_at, finished_at) VALUES"
        " (%s, 'legacy', 'm', 'running', 3, 1, 2, now() - interval '1 min',"
        "  now() - interval '2 min', NULL),"
        " (%s, 'legacy', 'm', 'completed', 1, 1, 1, now() - interval '9 min',"
        "  now() - interval '10 min', now() - interval '8 min')",
        (running, finished),
    )
    items = [
        # job, index, batch, status, attempts: batch 0 was claimed (one item done, one
        # pending), batch 1 never was.
        (running, 0, 0, "done", 1),
        (running, 1, 0, "pending", 1),
        (running, 2, 1, "pending", 0),
        (finished, 0, 0, "done", 1),
    ]
    for job, index, batch, status, attempts in items:
        conn.execute(
            "INSERT INTO job_items (job_id, item_index, batch_no, external_id, text,"
            " content_hash, status, attempts, updated_at)"
            " VALUES (%s, %s, %s, %s, 't', '\\x00', %s, %s, now() - interval '30 s')",
            (job, index, batch, f"i{index}", status, attempts),
        )
    return running, finished


def test_0004_upgrades_a_database_in_use_and_downgrades(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "0003")
    with psycopg.connect(database_url, autocommit=True) as conn:
        running, finished = _seed_0003(conn)

    command.upgrade(config, "0004")
    with psycopg.connect(database_url, autocommit=True) as conn:
        # Existing vectors count as the oldest submission.
        assert conn.execute("SELECT id, seq FROM vectors_legacy").fetchall() == [("old", 0)]
        # Pending items are numbered in submission order; finished ones are never written again.
        seqs = conn.execute(
            "SELECT job_id = %s, item_index, seq FROM job_items ORDER BY 1 DESC, 2", (running,)
        ).fetchall()
        assert seqs == [(True, 0, None), (True, 1, 1), (True, 2, 2), (False, 0, None)]
        batches = conn.execute(
            "SELECT batch_no, sends, sent_at IS NOT NULL, claimed_at IS NOT NULL,"
            " sent_at <= claimed_at, finished_at IS NULL FROM job_batches WHERE job_id = %s"
            " ORDER BY batch_no",
            (running,),
        ).fetchall()
        assert batches == [(0, 1, True, True, True, True), (1, 1, True, False, None, True)]
        assert conn.execute(
            "SELECT count(*) FROM job_batches WHERE job_id = %s", (finished,)
        ).fetchone() == (0,)

    # Today's rules read what later revisions add (0006: delivered_at, NULL for rows already
    # there, so no delivery is presumed, and its index, built concurrently).
    command.upgrade(config, "head")
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT count(*) FILTER (WHERE delivered_at IS NULL), count(*) FROM job_batches"
        ).fetchone() == (2, 2)
        assert conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'job_batches_delivered'::regclass"
        ).fetchone() == (True,)
        # The claimed, still pending batch is lost (its worker is gone); the other one was
        # sent and never claimed, so its message is taken to be queued.
        lost = lost_batches(conn, grace_s=0, unclaimed_s=3600, broker_wiped=False)
        assert [(b.job_id, b.batch_no) for b in lost] == [(str(running), 0)]
        assert len(lost_batches(conn, grace_s=0, unclaimed_s=3600, broker_wiped=True)) == 2
        # ...unless it went unclaimed for longer than the backstop (sent a minute ago).
        assert len(lost_batches(conn, grace_s=0, unclaimed_s=30, broker_wiped=False)) == 2
        assert lost_batches(conn, grace_s=3600, unclaimed_s=3600, broker_wiped=False) == []

        # New items continue the sequence.
        conn.execute(
            "INSERT INTO job_items (job_id, item_index, batch_no, external_id, text,"
            " content_hash) VALUES (%s, 3, 1, 'i3', 't', '\\x00')",
            (running,),
        )
        assert conn.execute("SELECT seq FROM job_items WHERE item_index = 3").fetchone() == (3,)

        # A job an older API recorded after the upgrade (no delivery rows) is adopted.
        older_api_job = uuid.uuid4()
        conn.execute(
            "INSERT INTO jobs (id, collection, manifest_id, total, batches)"
            " VALUES (%s, 'legacy', 'm', 1, 1)",
            (older_api_job,),
        )
        conn.execute(
            "INSERT INTO job_items (job_id, item_index, batch_no, external_id, text,"
            " content_hash) VALUES (%s, 0, 0, 'n0', 't', '\\x00')",
            (older_api_job,),
        )
        assert adopt_unrecorded_jobs(conn) == 1
        assert adopt_unrecorded_jobs(conn) == 0

    command.downgrade(config, "0003")
    with psycopg.connect(database_url, autocommit=True) as conn:
        columns = conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'seq'"
            " AND table_schema = 'public'"
        ).fetchall()
        assert columns == []
        assert conn.execute("SELECT to_regclass('job_batches')").fetchone() == (None,)
