"""Unlucky paths that must not cost a client a 500 or a long wait: two creates of one collection
at once, Postgres shutting a connection down mid-request, a broker error while a live query is
answered, two worker processes that share a host name and pid, and a read stuck behind a lock."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import numpy as np
import psycopg
import pytest
import redis

from embedq_core.manifest import ModelManifest
from embedq_core.query_protocol import QueryRequest, query_queue, serving_key, working_key
from ops.devstack.processes import start_api
from ops.devstack.stack import EmbeddedStack, free_port
from tests.support import ServiceHandle, wait_for
from workers.background.query_server import QueryServer
from workers.engine import Embedder


def test_concurrent_creates_of_one_collection_all_succeed(
    services: ServiceHandle, minilm_manifest: ModelManifest
) -> None:
    """They line up behind a lock on the catalog, then race: each gets the one collection."""
    url = services.settings.require_database_url()
    body = {"name": "created_at_once", "manifest_id": minilm_manifest.manifest_id}
    answers: list[httpx.Response] = []
    with psycopg.connect(url) as holder:
        holder.execute("LOCK TABLE collections IN ACCESS EXCLUSIVE MODE")
        threads = [
            threading.Thread(target=lambda: answers.append(services.post("/v1/collections", body)))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()

        def all_waiting() -> bool:
            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted"
                    " AND relation = 'collections'::regclass"
                ).fetchone()
            return row is not None and row[0] >= 4

        wait_for(all_waiting, 30, "four creates waiting on the catalog", services.children)
        holder.commit()
    for thread in threads:
        thread.join(timeout=60)
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert len({a.text for a in answers}) == 1


def test_a_connection_shut_down_by_postgres_is_a_503_with_retry_after(
    services: ServiceHandle,
) -> None:
    """psycopg's own OperationalError (the job's COPY runs on the raw connection), not a 500."""
    url = services.settings.require_database_url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION shut_down_probe() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF NEW.external_id = 'driver-probe' THEN"
            " RAISE EXCEPTION 'terminating connection' USING ERRCODE = '57P01'; END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER shut_down_probe BEFORE INSERT ON job_items"
            " FOR EACH ROW EXECUTE FUNCTION shut_down_probe()"
        )
    try:
        response = services.submit("docs", [{"id": "driver-probe", "text": "月亮"}])
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER shut_down_probe ON job_items")
            conn.execute("DROP FUNCTION shut_down_probe()")
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == str(services.settings.retry_after_s)
    assert response.json()["detail"][0]["type"] == "unavailable"


def test_a_read_stuck_behind_a_lock_is_cancelled_by_the_statement_timeout(
    services: ServiceHandle, tmp_path: Path
) -> None:
    """An operator's long transaction holds a lock the status read needs: the API's statement
    timeout answers 503 + Retry-After instead of holding the request (and a pooled connection)
    until the lock goes."""
    settings = services.settings.model_copy(
        update={"api_port": free_port(), "api_statement_timeout_s": 1.0}
    )
    api = start_api(settings, tmp_path)
    try:
        url = settings.require_database_url()
        with psycopg.connect(url) as holder:
            holder.execute("LOCK TABLE reembed_migrations IN ACCESS EXCLUSIVE MODE")
            response = httpx.get(
                f"http://{settings.api_host}:{settings.api_port}/v1/reembed/anything",
                headers=services.auth,
                timeout=20,
            )
            holder.rollback()
    finally:
        api.stop()
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == str(settings.retry_after_s)
    assert response.json()["detail"][0]["type"] == "unavailable"


def _fake_embedder(manifest_id: str) -> Embedder:
    result = SimpleNamespace(
        vectors=np.ones((1, 4), dtype=np.float32), token_counts=[3], truncated=[False], sparse=None
    )
    fake = SimpleNamespace(
        manifest=SimpleNamespace(manifest_id=manifest_id), embed=lambda *a, **k: result
    )
    return cast(Embedder, fake)


def test_two_workers_with_one_host_name_and_pid_are_two_members(stack: EmbeddedStack) -> None:
    settings = stack.settings()
    embedder = _fake_embedder("serving-members-test")
    first, second = (QueryServer(settings, embedder, "worker:1") for _ in range(2))
    first._announce()
    second._announce()
    client = redis.Redis.from_url(settings.require_redis_url())
    key = serving_key("serving-members-test")
    try:
        assert client.zcard(key) == 2
        first._withdraw()  # one container stops: the other still serves
        assert client.zcard(key) == 1
    finally:
        client.delete(key)


def test_a_broker_error_while_answering_clears_the_working_mark(
    stack: EmbeddedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = stack.settings()
    manifest_id = "working-mark-test"
    server = QueryServer(settings, _fake_embedder(manifest_id), "worker:2")
    client = redis.Redis.from_url(settings.require_redis_url())
    request = QueryRequest.new(["月亮"], "query", timeout_s=60)
    client.rpush(query_queue(manifest_id), request.encode())
    pushes: list[bytes] = []
    original = server._push

    def push(req: QueryRequest, message: bytes) -> Any:
        pushes.append(message)
        if len(pushes) == 2:  # the reply: the broker drops the connection
            raise redis.ConnectionError("connection reset")
        return original(req, message)

    monkeypatch.setattr(server, "_push", push)
    with pytest.raises(redis.ConnectionError):
        server.serve_one(timeout_s=5)
    assert server._current is None
    client.delete(working_key(request.request_id))
    server._announce()  # the heartbeat no longer renews the request's working key
    assert not client.exists(working_key(request.request_id))
    client.delete(serving_key(manifest_id), request.reply_key)
