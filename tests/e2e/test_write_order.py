"""Newest write wins: a late delivery of an older submission never overwrites a newer one."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from sqlalchemy import text

from embedq_core.catalog import create_collection
from embedq_core.db import libpq_url
from tests.support import PrivatePipeline, ServiceHandle, fail_first_write_of

OLD_TEXT = "The old wording of the answer, sent first."
NEW_TEXT = "The new wording of the answer, sent second."
SAME_TEXT = "A sentence both submissions agree on."


def _rows(pipeline: PrivatePipeline, table: str) -> dict[str, dict[str, Any]]:
    with pipeline.handle.engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT id, text, metadata, embedding::text AS e, job_id::text AS job FROM {table}"
            )
        ).mappings()
        return {r["id"]: dict(r) for r in rows}


def test_an_older_batch_delivered_after_a_newer_one_changes_nothing(
    private_pipeline: Callable[..., PrivatePipeline],
) -> None:
    # One batch per delivery, so the older one is written first (coalesced, the two would share a
    # delivery and the order of their writes would be the worker's, not the queue's).
    pipeline = private_pipeline("order", coalesce_below_items=0)
    handle = pipeline.handle
    fail_first_write_of(handle.engine, "vectors_order", "x")

    # y is stored once, so both later submissions find its text unchanged.
    worker = pipeline.start_worker()
    first = handle.submit("order", [{"id": "y", "text": SAME_TEXT, "metadata": {"v": 0}}])
    assert handle.wait_job(first.json()["job_id"])["status"] == "completed"
    worker.stop()

    # Both submissions queue while no worker runs: the older one is delivered first, its write
    # fails, the newer one completes, and then the reconciler sends the older one again.
    older = handle.submit(
        "order",
        [
            {"id": "x", "text": OLD_TEXT, "metadata": {"v": 1}},
            {"id": "y", "text": SAME_TEXT, "metadata": {"v": 1}},
            {"id": "ref-old", "text": OLD_TEXT},
        ],
    ).json()["job_id"]
    newer = handle.submit(
        "order",
        [
            {"id": "x", "text": NEW_TEXT, "metadata": {"v": 2}},
            {"id": "y", "text": SAME_TEXT, "metadata": {"v": 2}},
            {"id": "ref-new", "text": NEW_TEXT},
        ],
    ).json()["job_id"]
    pipeline.start_worker()
    newer_job = handle.wait_job(newer)
    assert (newer_job["status"], newer_job["done"], newer_job["unchanged"]) == ("completed", 3, 1)
    older_job = handle.wait_job(older)
    assert (older_job["status"], older_job["done"], older_job["failed"]) == ("completed", 3, 0)
    # The older batch really was delivered twice: once failing, once after the newer one.
    assert pipeline.items_sql(older, "attempts = 2") == 3
    with handle.engine.connect() as conn:
        older_batch = conn.execute(
            text(
                "SELECT sends, finished_at > (SELECT finished_at FROM job_batches WHERE job_id"
                " = :newer) FROM job_batches WHERE job_id = :older"
            ),
            {"older": older, "newer": newer},
        ).one()
    assert older_batch == (2, True)

    rows = _rows(pipeline, "vectors_order")
    assert rows["x"]["text"] == NEW_TEXT
    assert rows["x"]["metadata"] == {"v": 2}
    assert rows["x"]["e"] == rows["ref-new"]["e"] != rows["ref-old"]["e"]
    assert rows["x"]["job"] == newer
    assert rows["y"]["metadata"] == {"v": 2}
    assert rows["y"]["job"] == newer
    assert rows["ref-old"]["job"] == older  # the redelivery did write what was its own


def test_the_upsert_itself_refuses_an_older_submission(services: ServiceHandle) -> None:
    """The guard in SQL, for a row that lands between the write's locked read and its upsert."""
    from workers.delivery.rows import VectorRow, read_stored, refresh_unchanged, write_vectors

    with services.engine.connect() as conn:
        manifest_id, dimension = conn.execute(
            text("SELECT c.manifest_id, c.dimension FROM collections c WHERE name = 'docs'")
        ).one()
    create_collection(services.engine, "guard", manifest_id)
    job = uuid.uuid4()

    def row(text_: str, version: int, seq: int) -> VectorRow:
        digest = hashlib.sha256(text_.encode()).digest()
        return VectorRow("g", text_, {"v": version}, digest, False, seq)

    def vector(value: float) -> np.ndarray[Any, np.dtype[np.float32]]:
        v = np.zeros((1, dimension), dtype=np.float32)
        v[0, 0] = value
        return v

    older = vector(-1.0)
    url = libpq_url(services.settings.require_database_url())
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        with conn.transaction():
            assert write_vectors(
                conn, "vectors_guard", manifest_id, job, [row("new", 2, 20)], vector(1.0), {"g"}
            ) == {"g"}
        with conn.transaction():
            assert (
                write_vectors(
                    conn, "vectors_guard", manifest_id, job, [row("old", 1, 19)], older, set()
                )
                == set()
            )
            assert (
                refresh_unchanged(conn, "vectors_guard", manifest_id, job, [row("new", 1, 19)])
                == set()
            )
        with conn.transaction():
            # The row landed after the writer saw the id absent: its straight COPY fails on the
            # key, and the upsert it falls back to keeps the guard.
            assert (
                write_vectors(
                    conn, "vectors_guard", manifest_id, job, [row("old", 1, 19)], older, {"g"}
                )
                == set()
            )
        stored = conn.execute(
            "SELECT text, metadata, seq, (embedding::real[])[1] FROM vectors_guard"
        ).fetchone()
        assert stored == ("new", {"v": 2}, 20, 1.0)
        with conn.transaction():  # same text, newer submission: metadata only
            assert refresh_unchanged(
                conn, "vectors_guard", manifest_id, job, [row("new", 3, 21)]
            ) == {"g"}
        assert read_stored(conn, "vectors_guard", ["g"], lock=False)["g"].seq == 21
        assert conn.execute("SELECT metadata FROM vectors_guard").fetchone() == ({"v": 3},)
