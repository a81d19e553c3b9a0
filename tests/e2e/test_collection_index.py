"""When a collection is due its HNSW index: after its bulk load, and under a steady stream of
small jobs that never lets it drain (judged from the pending items of its unfinished jobs)."""

from __future__ import annotations

import uuid

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from sqlalchemy import text

from embedq_core.catalog import create_collection
from embedq_core.collection_index import collections_to_index
from embedq_core.db import libpq_url
from tests.support import ServiceHandle


def test_a_collection_is_due_its_index_when_few_items_are_pending(
    services: ServiceHandle,
) -> None:
    with services.engine.connect() as conn:
        manifest_id, dimension = conn.execute(
            text("SELECT c.manifest_id, c.dimension FROM collections c WHERE c.name = 'docs'")
        ).one()
    # Pending items of each collection's unfinished job (None: no unfinished job).
    names: dict[str, int | None] = {"ixstream": 9, "ixbulk": 10, "ixdrained": None, "ixempty": 0}
    for name in names:
        create_collection(services.engine, name, manifest_id)
    rng = np.random.default_rng(7)
    with psycopg.connect(libpq_url(services.settings.require_database_url())) as conn:
        register_vector(conn)
        # Rows and jobs stay uncommitted: no worker's maintenance pass sees them (or builds an
        # index under this test); the rule is judged inside this transaction, then rolled back.
        for name, pending in names.items():
            if name != "ixempty":
                vectors = rng.standard_normal((5, dimension)).astype(np.float32)
                for i, vector in enumerate(vectors):
                    conn.execute(
                        f"INSERT INTO vectors_{name} (id, text, embedding, manifest_id,"
                        " content_hash) VALUES (%s, 't', %s, %s, '\\x00')",
                        (f"r{i}", vector / np.linalg.norm(vector), manifest_id),
                    )
            if pending is None:
                continue
            # An unfinished job of 20 items, of which `pending` are neither done nor failed.
            conn.execute(
                "INSERT INTO jobs (id, collection, manifest_id, status, total, done, failed,"
                " batches) VALUES (%s, %s, %s, 'running', 20, %s, 1, 1)",
                (uuid.uuid4(), name, manifest_id, 20 - 1 - pending),
            )
        candidates = {
            c.vector_table: c.pending_items
            for c in collections_to_index(conn, 10)
            if c.vector_table in {f"vectors_{n}" for n in names}
        }
        conn.rollback()
    # A stream (9 pending < 10) and a drained collection are candidates; a load in progress
    # (10 pending) is not, nor is a collection without rows.
    assert candidates == {"vectors_ixstream": 9, "vectors_ixdrained": 0}
