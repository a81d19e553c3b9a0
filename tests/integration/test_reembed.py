"""The re-embedding migration on a live legacy table: 312-d ALBERT-shaped vectors → 1024-d
BGE-shaped ones, with kills, concurrent writes, cutover/rollback and verification."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from embedq_core.db import libpq_url
from embedq_core.manifest import ModelManifest
from embedq_core.settings import Settings
from ops.corpus import load_demo_corpus
from ops.processes import ChildProcess, process_env, start_worker
from tests.model_factory import build_tiny_albert, song_texts
from tests.support import ServiceHandle
from workers.engine import Embedder, EngineConfig

pytestmark = pytest.mark.integration

ROWS = 3000
CHUNK = 150


@pytest.fixture(scope="module")
def zh_sentences() -> list[str]:
    return [t for i, t in load_demo_corpus() if i.startswith("zh")]


@pytest.fixture(scope="module")
def albert(
    tmp_path_factory: pytest.TempPathFactory, zh_sentences: list[str]
) -> Callable[[list[str]], np.ndarray]:
    """The legacy model: ALBERT-shaped, 312-d, CLS output, not normalised."""
    import torch
    from transformers import AlbertModel, AutoTokenizer

    source = build_tiny_albert(
        tmp_path_factory.mktemp("albert") / "albert", [*zh_sentences, "（第首版）改新旧0123456789"]
    )
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AlbertModel.from_pretrained(source).eval()

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), 256):
                batch = tokenizer(
                    texts[start : start + 256],
                    padding=True,
                    truncation=True,
                    max_length=128,
                    return_tensors="pt",
                )
                out.append(model(**batch).last_hidden_state[:, 0].numpy())
        return np.concatenate(out)

    return embed


@dataclass
class ReembedEnv:
    """A database with a legacy table, and workers serving the BGE-shaped model."""

    settings: Settings
    model_dir: Path
    log_dir: Path
    workers: list[ChildProcess] = field(default_factory=list)

    def connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(libpq_url(self.settings.require_database_url()), autocommit=True)
        register_vector(conn)
        return conn

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "ops.cli", *args],
            env=process_env(self.settings),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def start_worker(self) -> ChildProcess:
        worker = start_worker(self.settings, self.log_dir, name=f"rworker{len(self.workers)}")
        self.workers.append(worker)
        return worker

    def state(self, name: str) -> dict[str, Any]:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT status, phase, chunks_done, cut_over, checkpoint FROM reembed_migrations"
                " WHERE name = %s",
                (name,),
            ).fetchone()
        assert row is not None
        return dict(
            zip(("status", "phase", "chunks_done", "cut_over", "checkpoint"), row, strict=True)
        )

    def wait(self, predicate: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        tails = "\n".join(f"--- {w.name}\n{w.log_tail(40)}" for w in self.workers)
        raise AssertionError(f"timed out waiting for {what}\n{tails}")


@pytest.fixture
def env(services: ServiceHandle, tiny_bge_dir: Path, tmp_path: Path) -> Iterator[ReembedEnv]:
    settings = services.settings.model_copy(
        update={
            "model_dir": tiny_bge_dir,
            "reembed_chunk_size": CHUNK,
            "reembed_follow_interval_s": 0.3,
            "reconcile_interval_s": 1.0,
            "requeue_grace_s": 2.0,
            "reembed_maintenance_work_mem": "64MB",
        }
    )
    environment = ReembedEnv(settings, tiny_bge_dir, tmp_path)
    yield environment
    for worker in environment.workers:
        worker.stop()


def make_legacy_table(
    env: ReembedEnv, table: str, texts: list[str], albert: Callable[[list[str]], np.ndarray]
) -> None:
    """ids 2, 4, 6, ...: the gaps let tests insert rows behind the backfill's checkpoint."""
    vectors = albert(texts)
    with env.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, lyrics text NOT NULL,"
            " embedding vector(312), updated_at timestamptz DEFAULT now())"
        )
        with conn.cursor().copy(f"COPY {table} (id, lyrics, embedding) FROM STDIN") as copy:
            for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
                copy.write_row((2 * (i + 1), text, vector))
        # A test-side audit: every write of a new vector, to prove none is done twice.
        conn.execute(f"CREATE TABLE {table}_audit (id bigint, at timestamptz DEFAULT now())")
        conn.execute(f"""
            CREATE FUNCTION {table}_audit_fn() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.embedding_1024 IS NOT NULL THEN
                INSERT INTO {table}_audit (id) VALUES (NEW.id);
              END IF;
              RETURN NEW;
            END $$""")


def install_audit(env: ReembedEnv, table: str) -> None:
    """Log each non-NULL write of the new column. Created before start (with the column, which
    start then finds and keeps), so not even the first chunk escapes it."""
    with env.connect() as conn:
        conn.execute(
            f"ALTER TABLE {table} ADD COLUMN embedding_1024 vector(1024),"
            " ADD COLUMN embedding_1024_manifest text"
        )
        conn.execute(
            f"CREATE TRIGGER {table}_audit AFTER UPDATE OF embedding_1024 ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION {table}_audit_fn()"
        )


def column_names(env: ReembedEnv, table: str) -> set[str]:
    with env.connect() as conn:
        rows = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass"
            " AND attnum > 0 AND NOT attisdropped",
            (table,),
        ).fetchall()
    return {r[0] for r in rows}


def start_args(env: ReembedEnv, table: str) -> list[str]:
    return [
        "--table",
        table,
        "--id",
        "id",
        "--text",
        "lyrics",
        "--vector",
        "embedding",
        "--model",
        str(env.model_dir),
        "--name",
        table,
    ]


def expected_vectors(env: ReembedEnv, texts: list[str]) -> np.ndarray:
    engine = EngineConfig.from_settings(env.settings)
    return Embedder.from_model_dir(env.model_dir, engine).embed(texts).vectors


def test_plan_counts_rows_estimates_time_and_shows_ddl(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    make_legacy_table(env, "plan_songs", song_texts(zh_sentences, 500), albert)
    out = env.cli("reembed", "plan", *start_args(env, "plan_songs")).stdout
    assert "rows: 500" in out
    assert "rows/s per worker" in out and "estimated backfill" in out
    assert 'ADD COLUMN IF NOT EXISTS "embedding_1024" vector(1024)' in out
    assert "USING hnsw" in out and "CREATE TRIGGER" in out
    assert "embedding_1024" not in column_names(env, "plan_songs")  # plan changes nothing


@pytest.mark.parametrize("bad", ["songs; drop table x", 'songs"--', "1songs", "a b"])
def test_identifiers_that_are_not_plain_names_are_rejected(env: ReembedEnv, bad: str) -> None:
    for flag in ("--table", "--text", "--vector", "--id"):
        args = {"--table": "songs", "--id": "id", "--text": "lyrics", "--vector": "embedding"}
        args[flag] = bad
        result = env.cli(
            "reembed",
            "plan",
            *[x for kv in args.items() for x in kv],
            "--model",
            str(env.model_dir),
            check=False,
        )
        assert result.returncode != 0
        assert "not a plain SQL identifier" in result.stderr


def test_kill_mid_migration_resumes_without_skipping_or_repeating_rows(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    texts = song_texts(zh_sentences, ROWS)
    make_legacy_table(env, "songs", texts, albert)
    install_audit(env, "songs")
    worker = env.start_worker()
    env.cli("reembed", "start", *start_args(env, "songs"))
    env.wait(lambda: env.state("songs")["chunks_done"] >= 3, "three chunks")
    worker.kill()  # mid-migration: the in-flight chunk's transaction is rolled back
    killed_at = env.state("songs")["chunks_done"]
    env.start_worker()
    env.wait(lambda: env.state("songs")["phase"] == "following", "backfill and index")
    state = env.state("songs")
    assert state["chunks_done"] >= killed_at
    with env.connect() as conn:
        per_row = dict(conn.execute("SELECT id, count(*) FROM songs_audit GROUP BY id").fetchall())
        missing = conn.execute("SELECT count(*) FROM songs WHERE embedding_1024 IS NULL").fetchone()
        chunk_rows = conn.execute(
            "SELECT sum(rows_read) FROM reembed_chunks WHERE migration = 'songs'"
        ).fetchone()
        index_valid = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = 'embedq_songs_hnsw'"
        ).fetchone()
    assert missing == (0,)
    assert len(per_row) == ROWS and set(per_row.values()) == {1}  # each row written exactly once
    assert chunk_rows == (ROWS,)  # the committed chunk log covers every row once
    assert index_valid == (True,)
    # The stored vectors are what the model computes for each row's text.
    verify = json.loads(env.cli("reembed", "verify", "songs", "--model", str(env.model_dir)).stdout)
    assert verify["ok"] and verify["missing"] == 0 and verify["sample_min_cos"] >= 0.9999


def test_rows_written_during_the_backfill_end_up_exactly_right(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    texts = song_texts(zh_sentences, ROWS)
    make_legacy_table(env, "live", texts, albert)
    env.start_worker()
    env.cli("reembed", "start", *start_args(env, "live"))
    env.wait(lambda: env.state("live")["chunks_done"] >= 2, "backfill under way")
    with env.connect() as conn:
        checkpoint = int(env.state("live")["checkpoint"] or 0)
        # Inserts both behind the checkpoint (odd ids) and beyond the end.
        new_rows = [(2 * i + 1, f"新歌（第{i}首）") for i in range(1, 60)]
        new_rows += [(100_000 + i, f"新版（第{i}首）") for i in range(40)]
        conn.cursor().executemany("INSERT INTO live (id, lyrics) VALUES (%s, %s)", new_rows)
        # Text changes behind and ahead of the checkpoint.
        changed_ids = [2 * i for i in range(1, 120, 2)] + [2 * i for i in range(2000, 2060)]
        conn.execute(
            "UPDATE live SET lyrics = lyrics || '（改）' WHERE id = ANY(%s)", (changed_ids,)
        )
        deleted_ids = [2 * i for i in range(300, 400)] + [2 * i for i in range(2800, 2850)]
        conn.execute("DELETE FROM live WHERE id = ANY(%s)", (deleted_ids,))
    assert checkpoint > 0
    env.wait(lambda: env.state("live")["phase"] == "following", "catch-up and index")
    with env.connect() as conn:
        rows = conn.execute(
            "SELECT id, lyrics, embedding_1024, embedding_1024_manifest FROM live ORDER BY id"
        ).fetchall()
    manifest_id = ModelManifest.read(env.model_dir).manifest_id
    assert len(rows) == ROWS + len(new_rows) - len(deleted_ids)
    assert not {r[0] for r in rows} & set(deleted_ids)
    assert all(r[2] is not None and r[3] == manifest_id for r in rows)
    stored = np.stack([r[2].to_numpy() for r in rows])
    fresh = expected_vectors(env, [r[1] for r in rows])
    cosines = np.sum(stored * fresh, axis=1)
    assert cosines.min() >= 0.9999, rows[int(cosines.argmin())][1]  # every row: its current text

    # Following: a row inserted after the backfill is embedded too.
    with env.connect() as conn:
        conn.execute("INSERT INTO live (id, lyrics) VALUES (999999, '后来的新歌（第1首）')")

    def embedded() -> bool:
        with env.connect() as conn:
            row = conn.execute(
                "SELECT embedding_1024 IS NOT NULL FROM live WHERE id = 999999"
            ).fetchone()
        return bool(row and row[0])

    env.wait(embedded, "the late insert to be embedded", 60)


def _top_ids(conn: psycopg.Connection[Any], query: np.ndarray) -> list[int]:
    # What a reader runs, before and after cutover alike.
    return [
        r[0]
        for r in conn.execute(
            "SELECT id FROM cut ORDER BY embedding <#> %s LIMIT 5", (query,)
        ).fetchall()
    ]


def test_cutover_rollback_cutover_keeps_queries_working(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    texts = song_texts(zh_sentences, 600)
    make_legacy_table(env, "cut", texts, albert)
    env.start_worker()
    early = env.cli("reembed", "cutover", "cut", check=False)
    assert early.returncode != 0  # no such migration yet
    env.cli("reembed", "start", *start_args(env, "cut"))
    env.wait(lambda: env.state("cut")["phase"] == "following", "backfill and index")
    legacy_query = albert([texts[10]])[0]
    new_query = expected_vectors(env, [texts[10]])[0]
    with env.connect() as conn:
        assert _top_ids(conn, legacy_query)[0] == 22

    env.cli("reembed", "cutover", "cut")
    with env.connect() as conn:
        assert _top_ids(conn, new_query)[0] == 22
        with pytest.raises(psycopg.errors.DataException):  # 312-d queries now fail loudly
            _top_ids(conn, legacy_query)
        conn.execute("SET enable_seqscan = off")  # 600 rows: show the index serves the query
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT id FROM cut ORDER BY embedding <#> %s LIMIT 5", (new_query,)
            )
        )
        assert "embedq_cut_hnsw" in plan
        # After cutover the trigger follows the renamed column: a text change is re-embedded.
        conn.execute("UPDATE cut SET lyrics = '改过的歌（第1首）' WHERE id = 2")

    def reembedded() -> bool:
        with env.connect() as conn:
            row = conn.execute("SELECT embedding IS NOT NULL FROM cut WHERE id = 2").fetchone()
        return bool(row and row[0])

    env.wait(reembedded, "the changed row after cutover", 60)

    env.cli("reembed", "rollback", "cut")
    with env.connect() as conn:
        assert _top_ids(conn, legacy_query)[0] == 22
    env.cli("reembed", "cutover", "cut")
    with env.connect() as conn:
        assert _top_ids(conn, new_query)[0] == 22
    assert {"embedding", "embedding_legacy", "embedding_manifest"} <= column_names(env, "cut")

    env.cli("reembed", "finalize", "cut", "--yes")
    with env.connect() as conn:
        assert _top_ids(conn, new_query)[0] == 22
    assert "embedding_legacy" not in column_names(env, "cut")


def test_pause_resume_status_api_and_metrics(
    env: ReembedEnv, albert: Any, zh_sentences: list[str], services: ServiceHandle
) -> None:
    make_legacy_table(env, "paused", song_texts(zh_sentences, ROWS), albert)
    env.start_worker()
    env.cli("reembed", "start", *start_args(env, "paused"))
    env.wait(lambda: env.state("paused")["chunks_done"] >= 1, "first chunk")
    env.cli("reembed", "pause", "paused")
    time.sleep(1.0)  # the step running at pause time may still commit its chunk
    frozen = env.state("paused")["chunks_done"]
    time.sleep(2.0)
    assert env.state("paused")["chunks_done"] == frozen
    status = json.loads(env.cli("reembed", "status", "paused", "--json").stdout)
    assert status["status"] == "paused" and 0 < status["rows_done"] < status["rows_total"] == ROWS
    assert status["rate_rows_per_s"] > 0 and status["eta_s"] > 0

    api = services.get("/v1/reembed/paused").json()
    assert (api["rows_total"], api["status"]) == (ROWS, "paused")
    assert services.get("/v1/reembed/nope").status_code == 404
    metrics = httpx.get(f"{services.api_url}/metrics").text
    assert 'embedq_reembed_rows{migration="paused",state="total"} 3000.0' in metrics
    assert 'embedq_reembed_rows_per_second{migration="paused"}' in metrics

    env.cli("reembed", "resume", "paused")
    env.wait(lambda: env.state("paused")["phase"] == "following", "completion after resume")
    watched = env.cli("reembed", "status", "paused", "--watch").stdout
    assert "following" in watched
