"""Helpers for tests that drive the real services."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from sqlalchemy import Engine, text

from embedq_core.catalog import create_collection, get_collection, register_model_dir
from embedq_core.db import libpq_url, make_engine
from embedq_core.lifecycle.jobs import NewItem, create_job
from embedq_core.manifest import MANIFEST_FILENAME, ModelManifest
from embedq_core.queueing import embed_queue, make_redis, queue_depth
from embedq_core.settings import Settings
from ops.devstack.processes import ChildProcess, process_env, start_worker
from workers.engine import EngineConfig

FINISHED = {"completed", "completed_with_errors", "failed"}


def each_text_once(
    known: dict[str, np.ndarray], texts: list[str], compute: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """Vectors of texts, computing (and keeping in known) only the texts not seen before: the
    tests check the same texts against the same model again and again."""
    missing = list(dict.fromkeys(t for t in texts if t not in known))
    if missing:
        known.update(zip(missing, compute(missing), strict=True))
    return np.stack([known[t] for t in texts])


def wait_for(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    children: list[ChildProcess],
    poll_s: float = 0.02,
    tail_lines: int = 30,
) -> None:
    """Poll predicate until it holds; fail with the children's log tails if it does not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    tails = "\n".join(f"--- {c.name}\n{c.log_tail(tail_lines)}" for c in children)
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


@dataclass
class ServiceHandle:
    """Running API + worker processes and how to reach them."""

    settings: Settings
    engine: Engine
    children: list[ChildProcess]
    log_dir: Path
    api_key: str

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def post(self, path: str, body: Any) -> httpx.Response:
        # json.dumps escapes non-ASCII, so tests can send what a client could: lone surrogates.
        return httpx.post(
            f"{self.api_url}{path}",
            content=json.dumps(body),
            headers={**self.auth, "Content-Type": "application/json"},
            timeout=30,
        )

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.api_url}{path}", headers=self.auth, timeout=30)

    def submit(self, collection: str, items: list[dict[str, Any]], **extra: Any) -> httpx.Response:
        return self.post(f"/v1/collections/{collection}/jobs", {"items": items, **extra})

    def wait_job(self, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
        """Poll the job until it finishes; fail with the worker log if it does not."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            response = self.get(f"/v1/jobs/{job_id}")
            if response.status_code == 200:  # 503 while Postgres is down: keep polling
                job: dict[str, Any] = response.json()
                if job["status"] in FINISHED:
                    return job
            time.sleep(0.1)
        tails = "\n".join(f"--- {c.name}\n{c.log_tail()}" for c in self.children)
        raise AssertionError(f"job {job_id} not finished after {timeout_s}s\n{tails}")

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll predicate until it holds; fail with the children's log tails if it does not."""
        wait_for(predicate, timeout_s, what, self.children)

    def wait_collection_idle(self, collection: str, timeout_s: float = 300) -> None:
        """Wait until every job of the collection has finished and its model's queue is empty,
        so a test leaves no work behind for the session's worker (later tests count its queue).
        A worker coalescing small batches finishes jobs whose own messages are still queued."""
        with self.engine.connect() as conn:
            manifest_id = conn.execute(
                text("SELECT manifest_id FROM collections WHERE name = :c"), {"c": collection}
            ).scalar_one()
        redis_client = make_redis(self.settings)

        def idle() -> bool:
            with self.engine.connect() as conn:
                unfinished = conn.execute(
                    text("SELECT count(*) FROM jobs WHERE collection = :c AND finished_at IS NULL"),
                    {"c": collection},
                ).scalar_one()
            return unfinished == 0 and queue_depth(redis_client, embed_queue(manifest_id)) == 0

        try:
            self.wait_until(idle, timeout_s, f"every job of {collection} to finish")
        finally:
            redis_client.close()


def engine_config(**changes: Any) -> EngineConfig:
    """The engine config the default settings describe, with `changes` (e.g. a runtime)."""
    return replace(EngineConfig.from_settings(Settings()), **changes)


def make_manifest_variant(src_dir: Path, dst_dir: Path, **changes: Any) -> ModelManifest:
    """Same ONNX files (symlinked), a manifest with changes: a distinct model id, so a distinct
    queue, for tests that need workers of their own or a queue nobody consumes."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    for path in src_dir.iterdir():
        if path.name != MANIFEST_FILENAME and not (dst_dir / path.name).exists():
            (dst_dir / path.name).symlink_to(path)
    manifest = ModelManifest.read(src_dir).model_copy(update=changes)
    manifest.write(dst_dir)
    return manifest


@dataclass
class PrivatePipeline:
    """A collection with its own API process and its own worker processes."""

    handle: ServiceHandle
    collection: str

    def start_worker(self) -> ChildProcess:
        n = sum(1 for c in self.handle.children if c.name.startswith("worker"))
        worker = start_worker(self.handle.settings, self.handle.log_dir, name=f"worker{n}")
        self.handle.children.append(worker)
        return worker

    def items_sql(self, job_id: str, where: str) -> int:
        """Count the job's items matching a SQL condition."""
        with self.handle.engine.connect() as conn:
            count = conn.exec_driver_sql(
                f"SELECT count(*) FROM job_items WHERE job_id = %(job)s AND {where}",
                {"job": job_id},
            ).scalar_one()
        return int(count)

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        self.handle.wait_until(predicate, timeout_s, what)


# Writes into the collection wait for this advisory lock while the test holds it.
WRITE_GATE = 4242


def gate_writes_and_audit(pipeline: PrivatePipeline) -> None:
    """Make every insert or update of the collection's table wait while WRITE_GATE is held
    exclusively, and record each write in <table>_writes (committed writes only)."""
    table = f"vectors_{pipeline.collection}"
    with pipeline.handle.engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table}_writes (id text NOT NULL)"))
        conn.execute(
            text(
                f"CREATE FUNCTION {table}_gate() RETURNS trigger LANGUAGE plpgsql AS $$"
                f" BEGIN PERFORM pg_advisory_lock_shared({WRITE_GATE});"
                f" PERFORM pg_advisory_unlock_shared({WRITE_GATE});"
                f" INSERT INTO {table}_writes VALUES (NEW.id); RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                f"CREATE TRIGGER {table}_gate BEFORE INSERT OR UPDATE ON {table}"
                f" FOR EACH ROW EXECUTE FUNCTION {table}_gate()"
            )
        )


def writes_waiting(pipeline: PrivatePipeline) -> int:
    """How many writes of the collection wait at the gate now."""
    with pipeline.handle.engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND objid = :gate"
            ),
            {"gate": WRITE_GATE},
        ).scalar_one()
    return int(waiting)


def job_in_new_collection(
    database_url: str, model_dir: Path, collection_name: str, items: list[NewItem]
) -> str:
    """Register model_dir, create a collection of it and a job of items in one batch; the job's
    id (the batch is recorded, not sent: a test delivers it itself, with the reconciler paused,
    or a running worker of the model sends it once the grace has passed)."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            manifest = register_model_dir(conn, model_dir)
        create_collection(engine, collection_name, manifest.manifest_id)
        with engine.connect() as conn:
            collection = get_collection(conn, collection_name)
        assert collection is not None
        job_id, _ = create_job(engine, collection, items, 16, 10**9)
    finally:
        engine.dispose()
    return str(job_id)


def run_delivery_script(
    script: str, settings: Settings, model_dir: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run a test's delivery script in a fresh interpreter, as a worker process would, with the
    stack's database and Redis URLs and model_dir before args; its exit code and output."""
    return subprocess.run(
        [sys.executable, "-c", script, settings.require_database_url(),
         settings.require_redis_url(), str(model_dir), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def fail_first_write_of(engine: Any, table: str, item_id: str) -> None:
    """A trigger that fails the first write of one id: a delivery that fails honestly, in the
    database, the way a constraint or a trigger of the user's would."""
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SEQUENCE {table}_fail_once"))
        conn.execute(
            text(
                f"CREATE FUNCTION {table}_fail_once() RETURNS trigger LANGUAGE plpgsql AS $$"
                f" BEGIN IF NEW.id = '{item_id}' AND nextval('{table}_fail_once') = 1 THEN"
                f" RAISE EXCEPTION 'injected: first write of % fails', NEW.id; END IF;"
                f" RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                f"CREATE TRIGGER {table}_fail_once BEFORE INSERT OR UPDATE ON {table}"
                f" FOR EACH ROW EXECUTE FUNCTION {table}_fail_once()"
            )
        )


@dataclass
class TableCliEnv:
    """A test of the user's own tables: an autocommit connection with pgvector types, and
    the `embedq` command run as a user would, with the test's settings in its environment."""

    settings: Settings

    def connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(libpq_url(self.settings.require_database_url()), autocommit=True)
        register_vector(conn)
        return conn

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "ops.cli.main", *args],
            env=process_env(self.settings),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result
