"""The re-embedding migration on a live legacy table: 312-d ALBERT-shaped vectors → 1024-d
BGE-shaped ones, with kills, concurrent writes, long readers, a failing step, cutover/rollback
and verification.

Every table is shaped the way ORMs make them: a mixed-case, spaced name in a non-public schema
("Shop Data"."Song Lyrics ..."), camelCase columns, rows whose text is empty, whitespace only
or NULL, duplicate texts, and gaps in the ids.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql

from embedq_core.db import libpq_url
from embedq_core.manifest import ModelManifest
from embedq_core.settings import Settings
from migrations.reembed import attempts
from migrations.reembed.progress import progress
from migrations.reembed.target import TargetError, resolve_target
from ops.data.corpus import load_demo_corpus
from ops.devstack.processes import ChildProcess, process_env, start_worker
from tests.model_factory import build_tiny_albert, song_texts
from tests.support import ServiceHandle, wait_for
from workers.engine import Embedder, EngineConfig

pytestmark = pytest.mark.integration

ROWS = 3000
CHUNK = 150
SCHEMA = "Shop Data"
ID, TEXT, VECTOR = "songId", "lyricsText", "Embedding"
NEW, NEW_MANIFEST = "Embedding_1024", "Embedding_1024_manifest"
# Rows with nothing to embed: they get no new vector and must not hold up cutover.
NO_TEXT: list[str | None] = ["", " ", "   ", "\t\n", "\u3000", "\u3000 \r\n", None, None]
LOCK_TIMEOUT_S = 0.5
# What a product query may take beyond the lock timeout on a busy 2-core machine. Without the
# timeout it would wait for the long reader: over 5 s in these tests.
SCHEDULING_SLACK_S = 1.25


def table_id(name: str) -> sql.Identifier:
    return sql.Identifier(SCHEMA, name)


def as_typed(name: str) -> str:
    """The table as an operator types it on the command line."""
    return f'"{SCHEMA}"."{name}"'


def has_text(text: str | None) -> bool:
    return text is not None and text.strip() != ""


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
class Background:
    """An `embedq` command left running, its output in files."""

    popen: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def finish(self, timeout_s: float = 120) -> tuple[int, str]:
        rc = self.popen.wait(timeout=timeout_s)
        return rc, self.out_path.read_text(errors="replace") + self.stderr()


@dataclass
class ReembedEnv:
    """A database with legacy tables, and workers serving the BGE-shaped model."""

    settings: Settings
    model_dir: Path
    log_dir: Path
    workers: list[ChildProcess] = field(default_factory=list)
    traffic: list[Traffic] = field(default_factory=list)

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

    def cli_background(self, *args: str) -> Background:
        n = len(list(self.log_dir.glob("cli*.out")))
        out, err = self.log_dir / f"cli{n}.out", self.log_dir / f"cli{n}.err"
        with out.open("wb") as out_file, err.open("wb") as err_file:
            popen = subprocess.Popen(
                [sys.executable, "-m", "ops.cli.main", *args],
                env=process_env(self.settings),
                stdout=out_file,
                stderr=err_file,
            )
        return Background(popen, out, err)

    def start_worker(self) -> ChildProcess:
        worker = start_worker(self.settings, self.log_dir, name=f"rworker{len(self.workers)}")
        self.workers.append(worker)
        return worker

    def state(self, name: str) -> dict[str, Any]:
        keys = ("status", "phase", "chunks_done", "cut_over", "checkpoint", "error")
        with self.connect() as conn:
            row = conn.execute(
                "SELECT status, phase, chunks_done, cut_over, checkpoint, error"
                " FROM reembed_migrations WHERE name = %s",
                (name,),
            ).fetchone()
        assert row is not None
        return dict(zip(keys, row, strict=True))

    def status(self, name: str, exact: bool = False) -> dict[str, Any]:
        """What `embedq reembed status --json` prints (with --exact: counted now)."""
        args = ["reembed", "status", name, "--json", *(["--exact"] if exact else [])]
        result: dict[str, Any] = json.loads(self.cli(*args).stdout)
        return result

    def progress(self, name: str) -> dict[str, Any]:
        """The same figures, read in-process (cheap enough to poll)."""
        with self.connect() as conn:
            return progress(conn, name).as_dict()

    def vector_of(self, name: str, column: str, row_id: int) -> Any:
        """One row's vector in `column`, or None."""
        with self.connect() as conn:
            row = conn.execute(
                sql.SQL("SELECT {} FROM {} WHERE {} = %s").format(
                    sql.Identifier(column), table_id(name), sql.Identifier(ID)
                ),
                (row_id,),
            ).fetchone()
        return row[0] if row else None

    def wait(self, predicate: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
        wait_for(predicate, timeout_s, what, self.workers, poll_s=0.05, tail_lines=40)


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
            "reembed_max_step_attempts": 3,
            "reembed_step_retry_delay_s": 0.2,
            "reembed_lock_timeout_s": LOCK_TIMEOUT_S,
            "reembed_lock_retry_timeout_s": 60.0,
            "reembed_index_poll_interval_s": 0.3,
        }
    )
    environment = ReembedEnv(settings, tiny_bge_dir, tmp_path)
    yield environment
    for traffic in environment.traffic:
        traffic.stop()
    for worker in environment.workers:
        worker.stop()


def legacy_rows(texts: list[str]) -> list[tuple[int, str | None]]:
    """Texts at ids 2, 4, 6, ... (the odd ids let tests insert behind the checkpoint), rows
    without text spread through the key range, and duplicate texts after a jump in the ids."""
    rows: list[tuple[int, str | None]] = [(2 * (i + 1), t) for i, t in enumerate(texts)]
    stride = len(texts) // (len(NO_TEXT) + 1)
    rows += [(2 * stride * (k + 1) + 1, text) for k, text in enumerate(NO_TEXT)]
    rows += [(10_000_000 + 1000 * k, texts[(k * 37) % len(texts)]) for k in range(6)]
    return rows


def make_legacy_table(
    env: ReembedEnv, name: str, texts: list[str], albert: Callable[[list[str]], np.ndarray]
) -> dict[int, str | None]:
    """The table, filled; returns its rows by id."""
    rows = legacy_rows(texts)
    vectors = albert([text or "" for _, text in rows])
    table = table_id(name)
    columns = [sql.Identifier(c) for c in (ID, TEXT, VECTOR, "updatedAt")]
    with env.connect() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} ({} bigint PRIMARY KEY, {} text, {} vector(312),"
                " {} timestamptz DEFAULT now())"
            ).format(table, *columns)
        )
        copy_sql = sql.SQL("COPY {} ({}, {}, {}) FROM STDIN").format(table, *columns[:3])
        with conn.cursor().copy(copy_sql) as copy:
            for (row_id, text), vector in zip(rows, vectors, strict=True):
                copy.write_row((row_id, text, vector))
    return dict(rows)


def add_new_columns(conn: psycopg.Connection[Any], name: str) -> None:
    """The columns start would add (it finds and keeps them), so triggers can be put on them."""
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD COLUMN {} vector(1024), ADD COLUMN {} text").format(
            table_id(name), sql.Identifier(NEW), sql.Identifier(NEW_MANIFEST)
        )
    )


def install_audit(env: ReembedEnv, name: str) -> sql.Identifier:
    """Log each non-NULL write of the new column. Created before start, so not even the first
    chunk escapes it. Returns the audit table."""
    audit, function = table_id(f"{name} audit"), table_id(f"{name} audit fn")
    with env.connect() as conn:
        add_new_columns(conn, name)
        conn.execute(sql.SQL("CREATE TABLE {} (id bigint)").format(audit))
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF NEW.{} IS NOT NULL THEN INSERT INTO {} (id) VALUES (NEW.{}); END IF;"
                " RETURN NEW; END $$"
            ).format(function, sql.Identifier(NEW), audit, sql.Identifier(ID))
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER audit AFTER UPDATE OF {} ON {} FOR EACH ROW EXECUTE FUNCTION {}()"
            ).format(sql.Identifier(NEW), table_id(name), function)
        )
    return audit


def column_names(env: ReembedEnv, name: str) -> set[str]:
    with env.connect() as conn:
        rows = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s)"
            " AND attnum > 0 AND NOT attisdropped",
            (table_id(name).as_string(conn),),
        ).fetchall()
    return {r[0] for r in rows}


def start_args(env: ReembedEnv, name: str, migration: str) -> list[str]:
    return [
        *("--table", as_typed(name), "--id", f'"{ID}"', "--text", f'"{TEXT}"'),
        *("--vector", f'"{VECTOR}"', "--model", str(env.model_dir), "--name", migration),
    ]


def expected_vectors(env: ReembedEnv, texts: list[str]) -> np.ndarray:
    engine = EngineConfig.from_settings(env.settings)
    return Embedder.from_model_dir(env.model_dir, engine).embed(texts).vectors


def stored(env: ReembedEnv, name: str, column: str = NEW) -> dict[int, tuple[Any, Any, Any]]:
    """id → (text, new vector or None, manifest id) for every row; `column` is where the new
    vectors are (VECTOR after cutover)."""
    manifest = "Embedding_manifest" if column == VECTOR else NEW_MANIFEST
    with env.connect() as conn:
        rows = conn.execute(
            sql.SQL("SELECT {}, {}, {}, {} FROM {}").format(
                *(sql.Identifier(c) for c in (ID, TEXT, column, manifest)), table_id(name)
            )
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def assert_exactly_right(env: ReembedEnv, name: str, column: str = NEW) -> dict[int, Any]:
    """Rows with text hold their current text's vector from this model; the others none."""
    rows = stored(env, name, column)
    manifest_id = ModelManifest.read(env.model_dir).manifest_id
    with_text = {i: r for i, r in rows.items() if has_text(r[0])}
    assert all(r[1] is None for i, r in rows.items() if i not in with_text)
    assert all(r[1] is not None and r[2] == manifest_id for r in with_text.values())
    ids = sorted(with_text)
    vectors = np.stack([with_text[i][1].to_numpy() for i in ids])
    fresh = expected_vectors(env, [with_text[i][0] for i in ids])
    cosines = np.sum(vectors * fresh, axis=1)
    assert cosines.min() >= 0.9999, with_text[ids[int(cosines.argmin())]][0]
    return rows


@dataclass
class Traffic:
    """The product's own queries on the table, each timed: reads by id and text-only inserts
    (the way the runbook asks writers to work during a migration)."""

    env: ReembedEnv
    name: str
    first_id: int
    reads: bool = True
    samples: list[tuple[float, float]] = field(default_factory=list)
    inserted: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.env.traffic.append(self)  # stopped at teardown, even if the test fails
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.env.wait(lambda: len(self.inserted) > 0, "the product's first write")

    def _run(self) -> None:
        table, row_id, text = table_id(self.name), sql.Identifier(ID), sql.Identifier(TEXT)
        read = sql.SQL("SELECT {} FROM {} WHERE {} = 2").format(text, table, row_id)
        insert = sql.SQL("INSERT INTO {} ({}, {}) VALUES (%s, %s)").format(table, row_id, text)
        with self.env.connect() as conn:
            n = 0
            while not self._stop.is_set():
                started = time.monotonic()
                if self.reads and n % 2:
                    conn.execute(read)
                else:
                    conn.execute(insert, (self.first_id + n, f"新歌（第{n}首）"))
                    self.inserted.append(self.first_id + n)
                self.samples.append((started, time.monotonic() - started))
                n += 1
                self._stop.wait(0.02)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def worst_between(self, since: float, until: float) -> tuple[float, int]:
        """The longest query that started in [since, until], and how many did."""
        window = [seconds for started, seconds in self.samples if since <= started <= until]
        return max(window, default=0.0), len(window)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@contextmanager
def long_reader(env: ReembedEnv, name: str) -> Iterator[None]:
    """A read transaction (a report, a pg_dump) holding ACCESS SHARE on the table."""
    with env.connect() as conn, conn.transaction():
        conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table_id(name)))
        yield


def ddl_beside_long_reader(env: ReembedEnv, name: str, traffic: Traffic, *args: str) -> str:
    """Run `embedq reembed ARGS` while a long reader holds the table: the DDL must time out and
    retry, the product's queries meanwhile wait no longer than the lock timeout, and the
    command succeeds once the reader is gone. Returns its output."""
    with long_reader(env, name):
        held_from = time.monotonic()
        job = env.cli_background(*args)
        # Four attempts have each waited LOCK_TIMEOUT_S, with backoff between: over 5 s.
        env.wait(lambda: job.stderr().count("gave up waiting") >= 4, f"{args[1]} to retry")
        assert job.popen.poll() is None, job.stderr()
        held_until = time.monotonic()
    rc, output = job.finish()
    assert rc == 0, output
    worst_s, count = traffic.worst_between(held_from, held_until)
    assert count >= 10, "the product's queries stalled"
    assert worst_s < LOCK_TIMEOUT_S + SCHEDULING_SLACK_S, f"a product query waited {worst_s:.2f}s"
    return output


def test_plan_counts_rows_estimates_time_and_shows_ddl(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    rows = make_legacy_table(env, "Song Lyrics Plan", song_texts(zh_sentences, 500), albert)
    out = env.cli("reembed", "plan", *start_args(env, "Song Lyrics Plan", "plan")).stdout
    assert f"rows: {len(rows)}" in out
    assert "rows/s per worker" in out and "estimated backfill" in out
    assert 'ALTER TABLE "Shop Data"."Song Lyrics Plan" ADD COLUMN IF NOT EXISTS' in out
    assert '"Embedding_1024" vector(1024)' in out
    assert "USING hnsw" in out and "CREATE TRIGGER" in out
    assert NEW not in column_names(env, "Song Lyrics Plan")  # plan changes nothing
    # Unquoted names fold to lower case, as in SQL; the error says how to write the real one.
    args = start_args(env, "Song Lyrics Plan", "plan")
    args[args.index(f'"{TEXT}"')] = TEXT
    wrong = env.cli("reembed", "plan", *args, check=False)
    assert wrong.returncode != 0 and 'did you mean "lyricsText"' in wrong.stderr


BAD_NAMES = ["songs; drop table x", 'songs"--', "1songs", "a b", '""', "a.b.c"]


def test_a_not_null_vector_column_is_refused_with_the_statement_to_run(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    """ORM-made tables declare the vector NOT NULL: text-only writers would fail after start
    (and after cutover, on the renamed legacy column). plan names the exact fix."""
    make_legacy_table(env, "Song Lyrics Not Null", song_texts(zh_sentences, 10), albert)
    with env.connect() as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(
                table_id("Song Lyrics Not Null"), sql.Identifier(VECTOR)
            )
        )
    args = [
        *("reembed", "plan", "--table", as_typed("Song Lyrics Not Null"), "--id", f'"{ID}"'),
        *("--text", f'"{TEXT}"', "--vector", f'"{VECTOR}"', "--model", str(env.model_dir)),
    ]
    refused = env.cli(*args, check=False)
    assert refused.returncode != 0
    statement = (
        f'ALTER TABLE "{SCHEMA}"."Song Lyrics Not Null" ALTER COLUMN "{VECTOR}" DROP NOT NULL;'
    )
    assert statement in refused.stderr.replace("\n", " "), refused.stderr
    with env.connect() as conn:
        conn.execute(statement)
    assert env.cli(*args).returncode == 0


def test_names_are_parsed_as_sql_never_interpolated(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    make_legacy_table(env, "Song Lyrics Names", song_texts(zh_sentences, 10), albert)
    good = {"table": as_typed("Song Lyrics Names"), "id": f'"{ID}"', "text": f'"{TEXT}"'}
    good["vector"] = f'"{VECTOR}"'
    with env.connect() as conn:
        target = resolve_target(conn, good["table"], good["id"], good["text"], good["vector"])
        assert (target.schema, target.table, target.text_column) == (
            SCHEMA,
            "Song Lyrics Names",
            TEXT,
        )
        for bad in BAD_NAMES:
            for kind in good:
                names = {**good, kind: bad}
                with pytest.raises(TargetError, match=r"not a valid SQL name|dotted parts"):
                    resolve_target(
                        conn, names["table"], names["id"], names["text"], names["vector"]
                    )
        # A quoted name may hold anything: it is a name, looked up, never run.
        with pytest.raises(TargetError, match="does not exist"):
            resolve_target(conn, '"x; DROP TABLE songs"', *list(good.values())[1:])
    result = env.cli(
        "reembed", "plan", "--table", "a b", "--id", "id", "--text", "t", "--vector", "v",
        "--model", str(env.model_dir), check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "not a valid SQL name" in result.stderr


def test_kill_mid_migration_resumes_without_skipping_or_repeating_rows(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    name = "Song Lyrics Kill"
    rows = make_legacy_table(env, name, song_texts(zh_sentences, ROWS), albert)
    with_text = [i for i, text in rows.items() if has_text(text)]
    audit = install_audit(env, name)
    worker = env.start_worker()
    env.cli("reembed", "start", *start_args(env, name, "kill"))
    env.wait(lambda: env.state("kill")["chunks_done"] >= 3, "three chunks")
    worker.kill()  # mid-migration: the in-flight chunk's transaction is rolled back
    killed_at = env.state("kill")["chunks_done"]
    env.start_worker()
    env.wait(lambda: env.state("kill")["phase"] == "following", "backfill and index")
    assert env.state("kill")["chunks_done"] >= killed_at
    with env.connect() as conn:
        per_row = dict(
            conn.execute(
                sql.SQL("SELECT id, count(*) FROM {} GROUP BY id").format(audit)
            ).fetchall()
        )
        chunk_rows = conn.execute(
            "SELECT sum(rows_read) FROM reembed_chunks WHERE migration = 'kill'"
        ).fetchone()
        index_valid = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = 'embedq_kill_hnsw'"
        ).fetchone()
        has_vector = conn.execute(
            sql.SQL("SELECT {} FROM {} WHERE {} IS NOT NULL").format(
                sql.Identifier(ID), table_id(name), sql.Identifier(NEW)
            )
        ).fetchall()
    # Each row with text written exactly once; rows without text never.
    assert sorted(per_row) == sorted(with_text) and set(per_row.values()) == {1}
    assert chunk_rows == (len(with_text),)  # the committed chunk log covers each row once
    assert index_valid == (True,)
    assert sorted(r[0] for r in has_vector) == sorted(with_text)
    # The stored vectors are what the model computes for each row's text.
    verify = json.loads(env.cli("reembed", "verify", "kill", "--model", str(env.model_dir)).stdout)
    assert verify["ok"] and verify["missing"] == 0 and verify["sample_min_cos"] >= 0.9999
    assert (verify["rows_with_text"], verify["rows_no_text"]) == (len(with_text), len(NO_TEXT))


def test_rows_written_during_the_backfill_end_up_exactly_right(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    name = "Song Lyrics Live"
    table = table_id(name)
    make_legacy_table(env, name, song_texts(zh_sentences, ROWS), albert)
    env.start_worker()
    env.cli("reembed", "start", *start_args(env, name, "live"))
    # A steady stream of inserts for the whole backfill: catch-up must still end.
    steady = Traffic(env, name, first_id=20_000_000, reads=False)
    steady.start()
    env.wait(lambda: env.state("live")["chunks_done"] >= 2, "backfill under way")
    insert = sql.SQL("INSERT INTO {} ({}, {}) VALUES (%s, %s)").format(
        table, sql.Identifier(ID), sql.Identifier(TEXT)
    )
    with env.connect() as conn:
        checkpoint = int(env.state("live")["checkpoint"] or 0)
        # Inserts behind the checkpoint (odd ids) and beyond the end, some without text.
        new_rows: list[tuple[int, str | None]] = [
            (2 * i + 1, f"新歌（第{i}首）") for i in range(1, 60)
        ]
        new_rows += [(100_000 + i, f"新版（第{i}首）") for i in range(40)]
        new_rows += [(121, "  "), (123, None), (100_100, "\u3000")]
        conn.cursor().executemany(insert, new_rows)
        # Text changes behind and ahead of the checkpoint; some texts become whitespace.
        changed = [2 * i for i in range(1, 120, 2)] + [2 * i for i in range(2000, 2060)]
        conn.execute(
            sql.SQL("UPDATE {t} SET {c} = {c} || '（改）' WHERE {i} = ANY(%s)").format(
                t=table, c=sql.Identifier(TEXT), i=sql.Identifier(ID)
            ),
            (changed,),
        )
        emptied = [2 * i for i in (3, 2500)]
        conn.execute(
            sql.SQL("UPDATE {} SET {} = ' ' WHERE {} = ANY(%s)").format(
                table, sql.Identifier(TEXT), sql.Identifier(ID)
            ),
            (emptied,),
        )
        deleted = [2 * i for i in range(300, 400)] + [2 * i for i in range(2800, 2850)]
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(table, sql.Identifier(ID)),
            (deleted,),
        )
    assert checkpoint > 0
    with env.connect() as writer, writer.transaction():
        # An open write transaction: CREATE INDEX CONCURRENTLY must wait for it. Meanwhile the
        # only worker keeps embedding new rows: the build does not occupy it.
        writer.execute(insert, (30_000_000, "等待中的新歌（第1首）"))
        env.wait(
            lambda: env.progress("live")["index_phase"] == "waiting for writers before build",
            "the index build to wait for the open writer",
        )
        before = steady.inserted[-1]
        env.wait(lambda: env.vector_of(name, NEW, before) is not None, "a row embedded meanwhile")
        assert env.state("live")["phase"] == "index"
    env.wait(lambda: env.state("live")["phase"] == "following", "the index after the writer")
    assert steady.alive()  # the phase moved on while inserts kept coming
    steady.stop()
    env.wait(lambda: env.progress("live")["rows_pending"] == 0, "the last inserts embedded")
    rows = assert_exactly_right(env, name)
    assert not set(rows) & set(deleted)
    no_text_now = {*emptied, 121, 123, 100_100}
    assert {i for i in no_text_now if rows[i][1] is None} == no_text_now
    status = env.status("live", exact=True)
    assert status["rows_no_text"] == len(NO_TEXT) + 5
    assert status["rows_done"] + status["rows_no_text"] == status["rows_total"] == len(rows)
    # Without --exact the counts are those taken when the following phase began (before the
    # last inserts): served from the migration's row, with the live pending count.
    kept = env.status("live")
    assert kept["counted_at"] is not None and kept["rows_pending"] == 0
    assert kept["rows_total"] <= status["rows_total"]


def _top_ids(conn: psycopg.Connection[Any], query: np.ndarray, column: str = VECTOR) -> list[int]:
    # What a reader runs, before and after cutover alike.
    return [
        r[0]
        for r in conn.execute(
            sql.SQL("SELECT {} FROM {} ORDER BY {} <#> %s LIMIT 5").format(
                sql.Identifier(ID), table_id("Song Lyrics Cut"), sql.Identifier(column)
            ),
            (query,),
        ).fetchall()
    ]


def test_cutover_rollback_cutover_beside_long_readers_and_writers(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    name = "Song Lyrics Cut"
    table = table_id(name)
    texts = song_texts(zh_sentences, 600)
    make_legacy_table(env, name, texts, albert)
    env.start_worker()
    early = env.cli("reembed", "cutover", "cut", check=False)
    assert early.returncode != 0  # no such migration yet
    traffic = Traffic(env, name, first_id=40_000_000)
    traffic.start()
    out = ddl_beside_long_reader(
        env, name, traffic, "reembed", "start", *start_args(env, name, "cut")
    )
    assert "started cut" in out
    env.wait(lambda: env.state("cut")["phase"] == "following", "backfill and index")
    legacy_query = albert([texts[10]])[0]
    new_query = expected_vectors(env, [texts[10]])[0]
    with env.connect() as conn:
        assert _top_ids(conn, legacy_query)[0] == 22

    # Rows without text and the product's steady inserts do not hold cutover up: no --force.
    ddl_beside_long_reader(env, name, traffic, "reembed", "cutover", "cut")
    with env.connect() as conn:
        assert _top_ids(conn, new_query)[0] == 22
        with pytest.raises(psycopg.errors.DataException):  # 312-d queries now fail loudly
            _top_ids(conn, legacy_query)
        # So does a writer still writing 312-d vectors (the runbook says: stop writing them).
        with pytest.raises(psycopg.errors.DataException, match="expected 1024 dimensions"):
            conn.execute(
                sql.SQL("INSERT INTO {} ({}, {}, {}) VALUES (%s, %s, %s)").format(
                    table, sql.Identifier(ID), sql.Identifier(TEXT), sql.Identifier(VECTOR)
                ),
                (50_000_000, "旧的写法", legacy_query),
            )
        conn.execute("SET enable_seqscan = off")  # 600 rows: show the index serves the query
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                sql.SQL("EXPLAIN SELECT 1 FROM {} ORDER BY {} <#> %s LIMIT 5").format(
                    table, sql.Identifier(VECTOR)
                ),
                (new_query,),
            )
        )
        assert "embedq_cut_hnsw" in plan
        # After cutover the trigger follows the renamed column: a text change is re-embedded.
        conn.execute(
            sql.SQL("UPDATE {} SET {} = '改过的歌（第1首）' WHERE {} = 2").format(
                table, sql.Identifier(TEXT), sql.Identifier(ID)
            )
        )
    # Text-only writes keep coming; the following phase embeds them into the new column.
    after_cutover = traffic.inserted[-1]
    env.wait(lambda: env.vector_of(name, VECTOR, after_cutover) is not None, "a new row embedded")
    env.wait(lambda: env.vector_of(name, VECTOR, 2) is not None, "the changed row re-embedded")
    traffic.stop()
    env.wait(lambda: env.progress("cut")["rows_pending"] == 0, "the last writes embedded")
    assert_exactly_right(env, name, VECTOR)

    env.cli("reembed", "rollback", "cut")
    with env.connect() as conn:
        assert _top_ids(conn, legacy_query)[0] == 22
    # Rows written after cutover have no ALBERT vector to go back to (the runbook says so).
    assert env.vector_of(name, VECTOR, after_cutover) is None
    env.cli("reembed", "cutover", "cut")
    with env.connect() as conn:
        assert _top_ids(conn, new_query)[0] == 22
    assert {VECTOR, "Embedding_legacy", "Embedding_manifest"} <= column_names(env, name)

    env.cli("reembed", "finalize", "cut", "--yes")
    with env.connect() as conn:
        assert _top_ids(conn, new_query)[0] == 22
    assert "Embedding_legacy" not in column_names(env, name)


def test_a_step_that_always_fails_ends_failed_with_its_error(
    env: ReembedEnv, albert: Any, zh_sentences: list[str], services: ServiceHandle
) -> None:
    name = "Song Lyrics Fail"
    make_legacy_table(env, name, song_texts(zh_sentences, 300), albert)
    hold = table_id(f"{name} hold")
    with env.connect() as conn:  # the product's own rule refuses the write of one row
        add_new_columns(conn, name)
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " RAISE EXCEPTION 'row % is under legal hold', NEW.{}; END $$"
            ).format(hold, sql.Identifier(ID))
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER hold BEFORE UPDATE OF {} ON {} FOR EACH ROW"
                " WHEN (NEW.{} = 40) EXECUTE FUNCTION {}()"
            ).format(sql.Identifier(NEW), table_id(name), sql.Identifier(ID), hold)
        )
    env.start_worker()
    env.cli("reembed", "start", *start_args(env, name, "fails"))
    env.wait(lambda: env.state("fails")["status"] == "failed", "the migration to fail")
    status = env.status("fails")
    assert (status["status"], status["step_attempts"], status["rows_embedded"]) == ("failed", 3, 0)
    assert "failed 3 times" in status["error"] and "row 40 is under legal hold" in status["error"]
    api = services.get("/v1/reembed/fails").json()
    assert (api["status"], api["error"]) == ("failed", status["error"])
    assert "failed" in env.cli("reembed", "status", "fails").stdout
    with env.connect() as conn:  # an attempt in progress (it holds the step lock) hasn't failed
        assert attempts.try_lock(conn, "step_attempts", "fails")
        assert env.progress("fails")["step_attempts"] == 2
        attempts.unlock(conn, "step_attempts", "fails")
    assert env.progress("fails")["step_attempts"] == 3

    with env.connect() as conn:  # the cause fixed, resume starts over with a fresh budget
        conn.execute(sql.SQL("DROP TRIGGER hold ON {}").format(table_id(name)))
    env.cli("reembed", "resume", "fails")
    env.wait(lambda: env.state("fails")["phase"] == "following", "completion after resume")
    status = env.status("fails")
    assert (status["status"], status["error"], status["step_attempts"]) == ("running", None, 0)
    assert_exactly_right(env, name)


def test_pause_resume_status_api_and_metrics(
    env: ReembedEnv, albert: Any, zh_sentences: list[str], services: ServiceHandle
) -> None:
    rows = make_legacy_table(env, "Song Lyrics Paused", song_texts(zh_sentences, ROWS), albert)
    env.start_worker()
    env.cli("reembed", "start", *start_args(env, "Song Lyrics Paused", "paused"))
    env.wait(lambda: env.state("paused")["chunks_done"] >= 1, "first chunk")
    # pause waits for a chunk in progress to commit (it takes the row lock), so nothing moves
    # after it returns; the checks below take seconds, then show nothing did.
    env.cli("reembed", "pause", "paused")
    frozen = env.state("paused")["chunks_done"]
    status = env.status("paused")
    assert status["status"] == "paused" and status["table"] == '"Shop Data"."Song Lyrics Paused"'
    assert 0 < status["rows_done"] < status["rows_total"] == len(rows)
    assert status["rows_no_text"] == len(NO_TEXT)
    assert status["rate_rows_per_s"] > 0 and status["eta_s"] > 0

    api = services.get("/v1/reembed/paused").json()
    assert (api["rows_total"], api["status"], api["rows_no_text"]) == (len(rows), "paused", 8)
    assert api["pending_estimated"] and api["rows_pending"] == status["rows_pending"]
    # Status reads none of the product's table but pending rows behind the checkpoint, through
    # the migration's partial index (none here). The planner is steered off sequential scans,
    # as it would be on a table of millions of rows: on 600 it would read them all, cheaply.
    with env.connect() as conn, conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        progress(conn, "paused")
        read = conn.execute(
            "SELECT seq_tup_read, idx_tup_fetch FROM pg_stat_xact_user_tables"
            " WHERE schemaname = 'Shop Data' AND relname = 'Song Lyrics Paused'"
        ).fetchone()
    assert read == (0, 0), read
    assert services.get("/v1/reembed/nope").status_code == 404
    # This API has no metrics token: its open /metrics names no migration or table (with the
    # token, test_metrics reads the migration series).
    metrics = httpx.get(f"{services.api_url}/metrics").text
    assert "embedq_queue_depth" in metrics
    assert 'migration="' not in metrics and "Song Lyrics" not in metrics
    assert env.state("paused")["chunks_done"] == frozen

    # As a start interrupted during CREATE INDEX CONCURRENTLY leaves it: the pending-rows index
    # invalid (the planner ignores it; IF NOT EXISTS would keep it). Resume rebuilds it.
    pending_valid = (
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = 'embedq_paused_pending'"
    )
    with env.connect() as conn:
        conn.execute(
            "UPDATE pg_index SET indisvalid = false"
            " WHERE indexrelid = '\"Shop Data\".embedq_paused_pending'::regclass"
        )
        assert conn.execute(pending_valid).fetchone() == (False,)
    env.cli("reembed", "resume", "paused")
    with env.connect() as conn:
        assert conn.execute(pending_valid).fetchone() == (True,)
    env.wait(lambda: env.state("paused")["phase"] == "following", "completion after resume")
    watched = env.cli("reembed", "status", "paused", "--watch").stdout
    assert "following" in watched
