"""A search's own planner settings (ef_search, iterative scans, exact) are in force in the
transaction its SQL runs in, and end with it: the API's connections are pooled, so a setting
that outlived its search would change the next request's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import Connection

from api.query_schemas import SearchIn
from api.routes.search import nearest, vector_literal
from embedq_core.catalog import create_collection, register_model_dir
from embedq_core.db import make_engine
from ops.devstack.stack import EmbeddedStack


def _show(conn: Connection, setting: str) -> str:
    return str(conn.exec_driver_sql(f"SHOW {setting}").scalar_one())


def test_a_search_runs_with_its_own_settings_and_leaks_none(
    stack: EmbeddedStack, minilm_dir: Path
) -> None:
    engine = make_engine(stack.settings().require_database_url(), pool_size=1)
    with engine.begin() as conn:
        manifest = register_model_dir(conn, minilm_dir)
    collection = create_collection(engine, "search_settings", manifest.manifest_id)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((60, collection.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with engine.begin() as conn:
        for i, vector in enumerate(vectors):
            conn.exec_driver_sql(
                f"INSERT INTO {collection.vector_table} (id, text, embedding, manifest_id,"
                " content_hash) VALUES (%(id)s, 'x', %(v)s::vector, %(m)s, '\\x00')",
                {"id": f"r{i:02d}", "v": vector_literal(vector), "m": manifest.manifest_id},
            )
        conn.exec_driver_sql(
            f"CREATE INDEX ON {collection.vector_table} USING hnsw (embedding vector_ip_ops)"
        )
    query = vectors[0] + 0.1 * vectors[1]
    truth = [f"r{i:02d}" for i in np.argsort(-(vectors @ query))[:5]]
    try:
        with engine.begin() as conn:
            default_ef = _show(conn, "hnsw.ef_search")
        with engine.begin() as conn:
            hits = nearest(conn, collection, query, None, SearchIn(query="q", k=5), 77)
            assert _show(conn, "hnsw.ef_search") == "77"
            assert _show(conn, "hnsw.iterative_scan") == "relaxed_order"
            assert _show(conn, "enable_indexscan") == "on"
        assert [hit.id for hit in hits] == truth
        with engine.begin() as conn:  # ef_search below k would cut the candidates short
            nearest(conn, collection, query, None, SearchIn(query="q", k=50), 12)
            assert _show(conn, "hnsw.ef_search") == "50"
        with engine.begin() as conn:
            exact = nearest(conn, collection, query, None, SearchIn(query="q", exact=True), 77)
            assert _show(conn, "enable_indexscan") == "off"
        assert [hit.id for hit in exact[:5]] == truth
        with engine.begin() as conn:  # the same pooled connection, after those transactions
            assert _show(conn, "hnsw.ef_search") == default_ef != "77"
            assert _show(conn, "hnsw.iterative_scan") == "off"
            assert _show(conn, "enable_indexscan") == "on"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {collection.vector_table}")
            conn.exec_driver_sql("DELETE FROM collections WHERE name = 'search_settings'")
        engine.dispose()
