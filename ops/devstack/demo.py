"""`embedq demo`: the whole pipeline on the embedded stack, then a similarity query in SQL."""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from embedq_core.api_keys import create_key
from embedq_core.catalog import create_collection, register_model_dir
from embedq_core.db import libpq_url, make_engine
from embedq_core.settings import Settings
from migrations.schema_upgrade import upgrade_head
from ops.data.corpus import load_demo_corpus
from ops.devstack.bundled_model import ensure_bundled_model
from ops.devstack.processes import ChildProcess, start_api, start_worker
from ops.devstack.stack import EmbeddedStack, free_port
from workers.engine import EngineConfig

COLLECTION = "demo"
DEMO_QUERIES = [
    "Will it rain tomorrow?",
    "How can I change my password?",
    "Which team won the soccer game?",
    "明天会下雨吗？",
]
FINISHED = {"completed", "completed_with_errors", "failed"}


def run_demo(settings: Settings, keep_running: bool = False) -> None:
    """Start everything, embed the bundled corpus through the API, print nearest neighbours."""
    console = Console()
    data_dir = settings.data_dir.resolve() / "demo"
    model_dir = settings.model_dir or data_dir / "models" / "all-minilm-l6-v2"
    children: list[ChildProcess] = []
    with (
        console.status("starting embedded Postgres + pgvector and Valkey"),
        EmbeddedStack(settings, data_dir) as stack,
    ):
        try:
            settings = stack.settings().model_copy(
                update={"model_dir": model_dir, "api_port": free_port()}
            )
            database_url = settings.require_database_url()
            with console.status("applying schema migrations"):
                upgrade_head(database_url)
            with console.status(f"exporting the bundled model to ONNX in {model_dir}"):
                ensure_bundled_model(model_dir, EngineConfig.from_settings(settings))
            engine = make_engine(database_url, pool_size=1)
            with engine.begin() as conn:
                manifest = register_model_dir(conn, model_dir)
                _, api_key = create_key(conn, "demo")
            collection = create_collection(engine, COLLECTION, manifest.manifest_id)
            engine.dispose()
            console.print(
                f"model [bold]{manifest.manifest_id}[/] ({manifest.dimension}-d, "
                f"{manifest.pooling} pooling); collection [bold]{COLLECTION}[/] → "
                f"table {collection.vector_table}"
            )
            with console.status("starting the API and one Celery worker"):
                children.append(start_api(settings, data_dir / "logs"))
                children.append(start_worker(settings, data_dir / "logs"))
            api_url = f"http://{settings.api_host}:{settings.api_port}"
            client = httpx.Client(
                base_url=api_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
            )
            _submit_and_follow(console, client, children)
            _show_neighbours(console, settings, collection.vector_table)
            if keep_running:
                _wait_for_interrupt(console, api_url, api_key, settings, children)
        finally:
            for child in reversed(children):
                child.stop()
    console.print("stopped API, worker, Valkey and Postgres")


def _submit_and_follow(
    console: Console, client: httpx.Client, children: list[ChildProcess]
) -> None:
    corpus = load_demo_corpus()
    items = [
        {"id": doc_id, "text": text, "metadata": {"source": "demo"}} for doc_id, text in corpus
    ]
    response = client.post(f"/v1/collections/{COLLECTION}/jobs", json={"items": items})
    response.raise_for_status()
    job_id = response.json()["job_id"]
    console.print(f"submitted {len(items)} texts: job {job_id} (HTTP {response.status_code})")
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    started = time.monotonic()
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("embedding", total=len(items))
        while True:
            for child in children:
                if not child.alive():
                    raise RuntimeError(f"{child.name} died:\n{child.log_tail()}")
            job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
            progress.update(task, completed=job["done"] + job["failed"])
            if job["status"] in FINISHED:
                break
            time.sleep(0.2)
    elapsed_s = time.monotonic() - started
    unchanged = (
        f" ({job['unchanged']} unchanged since an earlier run, so not embedded again)"
        if job["unchanged"]
        else ""
    )
    console.print(
        f"job {job['status']}: {job['done']} embedded, {job['failed']} failed "
        f"in {elapsed_s:.1f}s{unchanged}"
    )
    if job["status"] != "completed":
        raise RuntimeError(f"demo job ended {job['status']}: {job['errors'][:5]}")


def _show_neighbours(console: Console, settings: Settings, vector_table: str) -> None:
    from workers.engine import Embedder

    assert settings.model_dir is not None
    embedder = Embedder.from_model_dir(settings.model_dir, EngineConfig.from_settings(settings))
    query_vectors = embedder.embed(DEMO_QUERIES, input_type="query").vectors
    # <#> is negative inner product; vectors are unit length, so -(a <#> b) is the cosine.
    query = sql.SQL(
        "SELECT id, text, -(embedding <#> %s) AS score FROM {} ORDER BY embedding <#> %s LIMIT 5"
    ).format(sql.Identifier(vector_table))
    with psycopg.connect(libpq_url(settings.require_database_url())) as conn:
        register_vector(conn)
        for text, vector in zip(DEMO_QUERIES, query_vectors, strict=True):
            rows = conn.execute(query, (vector, vector)).fetchall()
            table = Table(title=f"top 5 for: {text}", title_justify="left")
            table.add_column("score", justify="right")
            table.add_column("id")
            table.add_column("text")
            for row_id, row_text, score in rows:
                table.add_row(f"{score:.3f}", row_id, row_text)
            console.print(table)
    console.print(
        f"query it yourself: SELECT id, text, -(embedding <#> q) AS score FROM {vector_table} "
        "ORDER BY embedding <#> q LIMIT 5;"
    )


def _wait_for_interrupt(
    console: Console, api_url: str, api_key: str, settings: Settings, children: list[ChildProcess]
) -> None:
    console.print(f"API:        {api_url}  (docs: {api_url}/docs)")
    console.print(f"API key:    {api_key}  (Authorization: Bearer ...)")
    console.print(f"Postgres:   {settings.database_url}")
    console.print(f"Redis:      {settings.redis_url}")
    console.print(f"model dir:  {settings.model_dir}")
    console.print("For the examples in the docs, in another shell:")
    console.print(
        f"export EMBEDQ_API_URL={api_url} EMBEDQ_KEY={api_key}"
        f" DATABASE_URL='{libpq_url(settings.require_database_url())}'"
        f" REDIS_URL='{settings.redis_url}'",
        soft_wrap=True,
        highlight=False,
    )
    console.print("Ctrl-C stops everything.")
    try:
        while all(child.alive() for child in children):
            time.sleep(1)
        console.print("[red]a child process exited; stopping[/]")
    except KeyboardInterrupt:
        console.print("stopping")
