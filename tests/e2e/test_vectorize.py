"""Table vectorizers against real processes: a 20,000-row table bound with a template over two
columns and backfilled by MiniLM workers; then a writer inserting, updating (text and other
columns) and deleting for a minute while workers are SIGKILLed and Valkey is flushed. At the
end every row with text holds its current text's vector, the others none; updates of other
columns embedded nothing; no statement of the writer hit its lock timeout. Also: rows the table
refuses are retried, parked and released without holding up the rest; drop; bad bindings."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
import redis
from pgvector.psycopg import register_vector

from api.metrics import StoreMetrics
from embedq_core.api_keys import create_key
from embedq_core.catalog import register_model_dir
from embedq_core.db import libpq_url, make_engine
from embedq_core.manifest import ModelManifest
from embedq_core.queueing import make_redis
from embedq_core.settings import Settings
from migrations.reembed.progress import progress
from ops.data.corpus import load_demo_corpus
from ops.devstack.processes import ChildProcess, process_env, start_worker
from tests.support import ServiceHandle, make_manifest_variant, wait_for
from workers.engine import Embedder, EngineConfig

ROWS = 20_000
NAME = "lyrics_vec"
TEMPLATE = "{title}\\n{body}"
# The writer's lock_timeout: the DDL lock timeout's default, the longest a product statement
# may wait behind embedq (a chunk's UPDATE holds the rows it writes until it commits).
LOCK_TIMEOUT_S = 2.0
WRITER_S = 60.0
CHAOS_ROUNDS = 4


def render(title: str | None, body: str | None) -> str:
    return f"{title or ''}\n{body or ''}"


def has_text(title: str | None, body: str | None) -> bool:
    return any(v is not None and v.strip() != "" for v in (title, body))


@dataclass
class VectorizeEnv:
    settings: Settings
    model_dir: Path
    manifest: ModelManifest
    log_dir: Path
    workers: list[ChildProcess] = field(default_factory=list)

    def connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(libpq_url(self.settings.require_database_url()), autocommit=True)
        register_vector(conn)
        return conn

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "ops.cli.main", *args],
            env=process_env(self.settings), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def start_worker(self) -> ChildProcess:
        worker = start_worker(self.settings, self.log_dir, name=f"vworker{len(self.workers)}")
        self.workers.append(worker)
        return worker

    def figures(self, name: str = NAME) -> dict[str, Any]:
        with self.connect() as conn:
            return progress(conn, name).as_dict()

    def wait(self, predicate: Any, what: str, timeout_s: float = 300) -> None:
        wait_for(predicate, timeout_s, what, self.workers, poll_s=0.1, tail_lines=40)

    def engine_reads(self, name: str = NAME) -> int:
        """Texts the steps sent to the engine in committed chunks."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT coalesce(sum(rows_read), 0) FROM reembed_chunks WHERE migration = %s",
                (name,),
            ).fetchone()
        return int(row[0]) if row else 0


@pytest.fixture
def venv(services: ServiceHandle, minilm_dir: Path, tmp_path: Path) -> Iterator[VectorizeEnv]:
    """A MiniLM export under its own manifest id, so only this test's workers serve it."""
    model_dir = tmp_path / "minilm-vectorize"
    manifest = make_manifest_variant(minilm_dir, model_dir, source_revision="test-vectorize")
    settings = services.settings.model_copy(
        update={
            "model_dir": model_dir,
            "reembed_chunk_size": 256,
            "reembed_follow_interval_s": 0.3,
            "reconcile_interval_s": 1.0,
            "requeue_grace_s": 2.0,
            "reembed_maintenance_work_mem": "64MB",
            "reembed_step_retry_delay_s": 0.2,
            "reembed_max_row_attempts": 3,
            "reembed_row_retry_delay_s": 0.3,
            "reembed_lock_timeout_s": LOCK_TIMEOUT_S,
            "reembed_index_poll_interval_s": 0.3,
        }
    )
    with services.engine.begin() as conn:  # as a worker or `embedq vectorize add` does
        register_model_dir(conn, model_dir)
    env = VectorizeEnv(settings, model_dir, manifest, tmp_path)
    yield env
    for worker in env.workers:
        worker.stop()
    with env.connect() as conn:  # no chain of this test's model left for the reconciler to revive
        conn.execute(
            "UPDATE reembed_migrations SET status = 'paused' WHERE manifest_id = %s"
            " AND status = 'running'",
            (manifest.manifest_id,),
        )


# Short texts (the demo sentences) and a few titles: the rendered texts repeat, so checking
# every row embeds each distinct text once.
TITLES = ["ballad", "rock", "民谣", "流行", "jazz", "摇滚", "folk", "说唱"]


def _texts() -> list[str]:
    return [t for _, t in load_demo_corpus()]


Rows = dict[int, tuple[str | None, str | None]]


def make_table(
    env: VectorizeEnv, table: str, rows: int
) -> dict[int, tuple[str | None, str | None]]:
    """lyrics(id, title, body, plays): titles and bodies from the bundled corpora, a few rows
    with nothing to embed."""
    texts = _texts()
    data: Rows = {}
    for i in range(1, rows + 1):
        if i % 997 == 0:
            data[i] = (None, " \u3000") if i % 2 else ("", None)
        else:
            data[i] = (TITLES[i % len(TITLES)], texts[(i * 7) % len(texts)])
    with env.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, title text, body text,"
            " plays integer NOT NULL DEFAULT 0)"
        )
        with conn.cursor().copy(f"COPY {table} (id, title, body) FROM STDIN") as copy:
            for row_id, (title, body) in data.items():
                copy.write_row((row_id, title, body))
    return data


def expected(env: VectorizeEnv, texts: list[str]) -> np.ndarray:
    embedder = Embedder.from_model_dir(env.model_dir, EngineConfig.from_settings(env.settings))
    return embedder.embed(texts).vectors


def assert_exactly_right(env: VectorizeEnv, table: str) -> int:
    """Every row with text holds its current text's vector from this model; the others none.
    Returns the rows checked."""
    with env.connect() as conn:
        rows = conn.execute(
            f"SELECT id, title, body, embedding, embedding_manifest FROM {table}"
        ).fetchall()
    with_text = [r for r in rows if has_text(r[1], r[2])]
    assert all(r[3] is None and r[4] is None for r in rows if not has_text(r[1], r[2]))
    missing = [r[0] for r in with_text if r[3] is None or r[4] != env.manifest.manifest_id]
    assert not missing, f"{len(missing)} rows with text lack their vector, e.g. {missing[:5]}"
    stored = np.stack([r[3].to_numpy() for r in with_text])
    texts = [render(r[1], r[2]) for r in with_text]
    distinct = list(dict.fromkeys(texts))
    vector_of = dict(zip(distinct, expected(env, distinct), strict=True))
    fresh = np.stack([vector_of[t] for t in texts])
    cosines = np.sum(stored * fresh, axis=1)
    worst = int(cosines.argmin())
    assert cosines[worst] >= 0.9999, (with_text[worst][0], float(cosines[worst]))
    return len(with_text)


@dataclass
class Writer:
    """The product: inserts, text updates, other-column updates, text cleared, deletes; each
    statement under the lock timeout, timed."""

    env: VectorizeEnv
    table: str
    next_id: int
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    worst_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng = random.Random(5)
        texts = _texts()
        t = self.table
        with self.env.connect() as conn:
            conn.execute(f"SET lock_timeout = '{int(LOCK_TIMEOUT_S * 1000)}ms'")
            while not self._stop.is_set():
                kind = rng.choice(["insert", "text", "other", "other", "clear", "delete"])
                row_id = rng.randint(1, self.next_id - 1)
                body = f"{rng.choice(texts)} ({rng.randint(0, 20)})"
                statements = {
                    "insert": (f"INSERT INTO {t} (id, title, body) VALUES (%s, %s, %s)",
                               (self.next_id, rng.choice(TITLES), body)),
                    "text": (f"UPDATE {t} SET body = %s WHERE id = %s", (body, row_id)),
                    "other": (f"UPDATE {t} SET plays = plays + 1 WHERE id = %s", (row_id,)),
                    "clear": (f"UPDATE {t} SET title = '', body = NULL WHERE id = %s", (row_id,)),
                    "delete": (f"DELETE FROM {t} WHERE id = %s", (row_id,)),
                }  # fmt: skip
                sql_text, params = statements[kind]
                started = time.monotonic()
                try:
                    conn.execute(sql_text, params)
                except psycopg.Error as exc:
                    self.errors.append(f"{kind}: {exc}")
                self.worst_s = max(self.worst_s, time.monotonic() - started)
                self.counts[kind] = self.counts.get(kind, 0) + 1
                if kind == "insert":
                    self.next_id += 1
                self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def test_a_bound_table_follows_writes_through_kills_and_a_flushed_broker(
    venv: VectorizeEnv,
) -> None:
    table = "lyrics"
    make_table(venv, table, ROWS)
    venv.start_worker()
    venv.start_worker()
    added = venv.cli(
        "vectorize", "add", NAME, "--table", table, "--id", "id", "--template", TEMPLATE,
        "--vector", "embedding", "--model", str(venv.model_dir),
    )  # fmt: skip
    assert f"vectorizer {NAME}" in added.stdout and "20,000 rows" in added.stdout, added.stdout
    venv.wait(lambda: venv.figures()["phase"] == "following", "backfill and HNSW index", 600)
    with venv.connect() as conn:
        hnsw = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            f" WHERE c.relname = 'embedq_{NAME}_hnsw'"
        ).fetchone()
    assert hnsw == (True,)

    writer = Writer(venv, table, ROWS + 1)
    broker = redis.Redis.from_url(venv.settings.require_redis_url())
    writer.start()
    started = time.monotonic()
    kills = flushes = 0
    try:
        # Four crashes spread over the writer's minute, every other one with the broker wiped.
        for round_no in range(CHAOS_ROUNDS):
            due = started + (round_no + 1) * WRITER_S / (CHAOS_ROUNDS + 1)
            time.sleep(max(0.0, due - time.monotonic()))
            victim = next(w for w in venv.workers if w.alive())  # the longest-running one
            victim.kill()  # mid-chunk or idle: either way nothing may be lost
            kills += 1
            if round_no % 2 == 0:
                broker.flushdb()  # every queued step message gone; Postgres still knows
                flushes += 1
            venv.start_worker()
        time.sleep(max(0.0, started + WRITER_S - time.monotonic()))
    finally:
        writer.stop()
        broker.close()
    assert kills >= 4 and flushes >= 2 and writer.counts["insert"] > 100
    assert not writer.errors, (writer.errors[:5], writer.worst_s)
    venv.wait(
        lambda: (f := venv.figures())["rows_pending"] == 0 and f["lag_s"] is None,
        "every written row embedded",
        300,
    )
    checked = assert_exactly_right(venv, table)
    assert checked > ROWS // 2  # the writer deleted and emptied some

    # Updates of other columns (or setting a text to itself) never fire the trigger: no vector
    # is cleared, so no row is pending, so nothing can be embedded again.
    reads = venv.engine_reads()
    count_null = f"SELECT count(*) FROM {table} WHERE embedding IS NULL AND id <= 2000"
    with venv.connect() as conn:
        before = conn.execute(count_null).fetchone()
        conn.execute(f"UPDATE {table} SET plays = plays + 1 WHERE id <= 2000")
        conn.execute(f"UPDATE {table} SET title = title WHERE id <= 500")  # same text
        after = conn.execute(count_null).fetchone()
    assert after == before
    assert venv.figures()["rows_pending"] == 0 and venv.engine_reads() == reads

    status = json.loads(venv.cli("vectorize", "status", NAME, "--json").stdout)
    assert status["kind"] == "vectorizer" and status["phase"] == "following"
    assert status["rows_parked"] == 0 and status["failures"] == []
    listed = venv.cli("vectorize", "list").stdout
    assert NAME in listed and "following" in listed


def test_rows_the_table_refuses_are_retried_parked_and_never_hold_up_the_rest(
    venv: VectorizeEnv, services: ServiceHandle
) -> None:
    """The table's own trigger refuses the vector of 'poison' rows: the others are embedded
    around them; the poison rows are retried with backoff, parked after 3 attempts and shown
    with their error; once the table is fixed, resume --retry-parked embeds them."""
    table = "lyrics_refusing"
    rows = make_table(venv, table, 600)
    with venv.connect() as conn:
        conn.execute(f"UPDATE {table} SET title = 'poison' WHERE id IN (7, 300, 301)")
        conn.execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.title = 'poison' AND NEW.embedding IS NOT NULL THEN"
            " RAISE EXCEPTION 'poisoned row %', NEW.id; END IF; RETURN NEW; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER refuse BEFORE UPDATE ON {table} FOR EACH ROW"
            " EXECUTE FUNCTION refuse_poison()"
        )
    venv.start_worker()
    venv.cli(
        "vectorize", "add", "refusing", "--table", table, "--id", "id", "--template", TEMPLATE,
        "--vector", "embedding", "--model", str(venv.model_dir), "--chunk-size", "100",
    )  # fmt: skip

    def parked() -> bool:
        return venv.figures("refusing")["rows_parked"] == 3

    venv.wait(parked, "the three poison rows parked")
    figures = venv.figures("refusing")
    assert figures["status"] == "running" and figures["rows_retrying"] == 0
    assert figures["rows_pending"] == 3  # only the parked ones
    # A row inserted after them is embedded: nothing waits behind the parked rows.
    with venv.connect() as conn:
        conn.execute(f"INSERT INTO {table} (id, title, body) VALUES (9999, 'late', 'a late row')")
    venv.wait(lambda: venv.figures("refusing")["rows_pending"] == 3, "the late row embedded")
    status = json.loads(venv.cli("vectorize", "status", "refusing", "--json").stdout)
    assert sorted(f["row"] for f in status["failures"]) == [7, 300, 301]
    assert all(f["parked"] and f["attempts"] == 3 for f in status["failures"])
    assert "poisoned row" in status["failures"][0]["error"]
    shown = venv.cli("vectorize", "status", "refusing").stdout
    assert "rows the table refused" in shown and "parked" in shown

    with venv.connect() as conn:
        conn.execute(f"DROP TRIGGER refuse ON {table}")
    venv.cli("vectorize", "resume", "refusing", "--retry-parked")
    venv.wait(lambda: venv.figures("refusing")["rows_pending"] == 0, "the released rows")
    assert venv.figures("refusing")["rows_parked"] == 0
    assert assert_exactly_right(venv, table) == sum(has_text(*r) for r in rows.values()) + 1


def test_lag_and_pending_reach_prometheus_and_drop_keeps_or_drops_the_vectors(
    venv: VectorizeEnv, services: ServiceHandle
) -> None:
    table = "lyrics_metrics"
    make_table(venv, table, 300)
    venv.cli(
        "vectorize", "add", "metered", "--table", table, "--id", "id", "--text", "body",
        "--vector", '"Vec"', "--model", str(venv.model_dir),
    )  # fmt: skip
    # No worker yet: everything waits, and the lag grows.
    with venv.connect() as conn:
        conn.execute(f"INSERT INTO {table} (id, body) VALUES (5000, 'waiting')")
    venv.wait(lambda: (venv.figures("metered")["lag_s"] or 0) > 0.2, "a measurable lag")
    # What the API's /metrics serves behind its token, read by its own collector.
    families = {
        family.name: family
        for family in StoreMetrics(
            make_engine(venv.settings.require_database_url(), pool_size=1),
            make_redis(venv.settings),
            cache_s=0,
            with_names=True,
        ).collect()
    }
    samples = {
        (s.name, s.labels.get("vectorizer"), s.labels.get("state")): s.value
        for family in families.values()
        for s in family.samples
    }
    assert samples[("embedq_vectorizer_lag_seconds", "metered", None)] > 0.2
    assert samples[("embedq_vectorizer_pending_rows", "metered", None)] == 301
    assert samples[("embedq_vectorizer_failed_rows", "metered", "parked")] == 0

    venv.start_worker()
    venv.wait(lambda: venv.figures("metered")["rows_pending"] == 0, "the table embedded")
    with venv.connect() as conn:
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
                " AND NOT attisdropped",
                (table,),
            )
        }
    assert {"Vec", "Vec_manifest", "Vec_queued_at"} <= columns
    venv.cli("vectorize", "drop", "metered")
    with venv.connect() as conn:
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
            (table,),
        ).fetchone()
        conn.execute(f"UPDATE {table} SET body = 'changed' WHERE id = 1")
        kept = conn.execute(f'SELECT count(*) FROM {table} WHERE "Vec" IS NOT NULL').fetchone()
    assert triggers == (0,) and kept is not None and kept[0] > 250
    assert venv.cli("vectorize", "status", "metered", check=False).returncode != 0


def test_bindings_that_cannot_work_are_refused_with_the_reason(venv: VectorizeEnv) -> None:
    table = "lyrics_refused"
    make_table(venv, table, 20)
    with venv.connect() as conn:
        conn.execute(
            f"ALTER TABLE {table} ADD COLUMN filled vector(384), ADD COLUMN small vector(3)"
        )
        conn.execute(
            f"UPDATE {table} SET filled = array_fill(0.1, ARRAY[384])::vector WHERE id = 1"
        )
    base = [
        "vectorize",
        "add",
        "bad",
        "--table",
        table,
        "--id",
        "id",
        "--model",
        str(venv.model_dir),
    ]
    cases = {
        ("--text", "body", "--template", "{body}", "--vector", "v"): "not both",
        ("--text", "plays", "--vector", "v"): "is integer, not text",
        ("--template", "{body} {nope}", "--vector", "v"): "nope is not a column",
        ("--template", "{body", "--vector", "v"): "unclosed",
        ("--template", "no columns", "--vector", "v"): "names no column",
        ("--text", "body", "--vector", "filled"): "already holds vectors",
        ("--text", "body", "--vector", "small"): "vector(3), not vector(384)",
        ("--text", "body", "--vector", "body"): "is the table's text column",
        ("--text", "body", "--id", "title", "--vector", "v"): "primary key",
    }
    for args, message in cases.items():
        result = venv.cli(*base, *args, check=False)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
    with venv.connect() as conn:
        assert conn.execute(
            "SELECT count(*) FROM reembed_migrations WHERE name = 'bad'"
        ).fetchone() == (0,)


def test_admin_keys_manage_vectorizers_over_http_and_other_keys_are_refused(
    venv: VectorizeEnv, services: ServiceHandle
) -> None:
    table = "lyrics_http"
    make_table(venv, table, 200)
    with services.engine.begin() as conn:
        _, admin_key = create_key(conn, "vectorize-admin", admin=True)
        _, plain_key = create_key(conn, "vectorize-plain")
    body = {
        "name": "over_http", "table": table, "id": "id", "template": TEMPLATE,
        "vector": "embedding", "model": venv.manifest.manifest_id,
    }  # fmt: skip

    def call(method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{services.api_url}{path}", headers={"Authorization": f"Bearer {key}"},
            timeout=120, **kwargs,
        )  # fmt: skip

    refused = call("POST", "/v1/vectorizers", plain_key, json=body)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"][0]["loc"] == ["header", "authorization"]
    assert call("GET", "/v1/vectorizers", plain_key).status_code == 403

    bad = call("POST", "/v1/vectorizers", admin_key, json={**body, "template": "{nope}"})
    assert bad.status_code == 422 and "nope is not a column" in bad.text, bad.text
    created = call("POST", "/v1/vectorizers", admin_key, json=body)
    assert created.status_code == 201, created.text
    assert created.json()["kind"] == "vectorizer" and created.json()["rows_total"] == 200
    again = call("POST", "/v1/vectorizers", admin_key, json=body)
    assert again.status_code == 409, again.text
    venv.start_worker()
    venv.wait(lambda: venv.figures("over_http")["phase"] == "following", "the backfill")
    listed = call("GET", "/v1/vectorizers", admin_key).json()
    ours = [v for v in listed if v["name"] == "over_http"]
    assert len(ours) == 1 and ours[0]["rows_pending"] == 0
    assert ours[0]["table"] == f'"public"."{table}"'
    paused = call("POST", "/v1/vectorizers/over_http/pause", admin_key)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    resumed = call(
        "POST", "/v1/vectorizers/over_http/resume", admin_key, json={"retry_parked": True}
    )
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"
    assert call("GET", "/v1/vectorizers/nope", admin_key).status_code == 404
    gone = call("DELETE", "/v1/vectorizers/over_http?drop_columns=true", admin_key)
    assert gone.status_code == 204, gone.text
    with venv.connect() as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass"
            " AND attname LIKE 'embedding%%' AND NOT attisdropped",
            (table,),
        ).fetchone()
    assert left == (0,)
