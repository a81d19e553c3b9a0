"""The harness of the re-embedding tests (tests/e2e/test_reembed.py): a legacy table shaped as
ORMs make them, the processes and traffic around a migration, and what a right result is."""

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

import numpy as np
import psycopg
from psycopg import sql

from embedq_core.manifest import ModelManifest
from migrations.reembed.progress import progress
from ops.devstack.processes import ChildProcess, process_env, start_worker
from tests.support import TableCliEnv, each_text_once, wait_for
from workers.engine import Embedder, EngineConfig

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
class ReembedEnv(TableCliEnv):
    """A database with legacy tables, and workers serving the BGE-shaped model."""

    model_dir: Path
    log_dir: Path
    workers: list[ChildProcess] = field(default_factory=list)
    traffic: list[Traffic] = field(default_factory=list)

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


# Per model dir, text → the model's vector.
_EXPECTED: dict[Path, dict[str, np.ndarray]] = {}


def expected_vectors(env: ReembedEnv, texts: list[str]) -> np.ndarray:
    """What the model computes for each text, in process (each text once per model dir)."""

    def compute(missing: list[str]) -> np.ndarray:
        engine = EngineConfig.from_settings(env.settings)
        return Embedder.from_model_dir(env.model_dir, engine).embed(missing).vectors

    return each_text_once(_EXPECTED.setdefault(env.model_dir, {}), texts, compute)


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
    pause_s: float = 0.02  # between queries
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
                self._stop.wait(self.pause_s)

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
