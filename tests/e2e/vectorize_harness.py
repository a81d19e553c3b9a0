"""Helpers of the table-vectorizer tests: the environment (settings, a MiniLM export under its
own manifest id, workers, the CLI), the lyrics table, the product's writer, and the check that
every row holds exactly its current text's vector."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from embedq_core.manifest import ModelManifest
from migrations.reembed.progress import progress
from ops.data.corpus import load_demo_corpus
from ops.devstack.processes import ChildProcess, start_worker
from tests.support import TableCliEnv, wait_for
from workers.engine import Embedder, EngineConfig

NAME = "lyrics_vec"
TEMPLATE = "{title}\\n{body}"
# The writer's lock_timeout: the DDL lock timeout's default, the longest a product statement
# may wait behind embedq (a chunk's UPDATE holds the rows it writes until it commits).
LOCK_TIMEOUT_S = 2.0


def render(title: str | None, body: str | None) -> str:
    return f"{title or ''}\n{body or ''}"


def has_text(title: str | None, body: str | None) -> bool:
    return any(v is not None and v.strip() != "" for v in (title, body))


@dataclass
class VectorizeEnv(TableCliEnv):
    model_dir: Path
    manifest: ModelManifest
    log_dir: Path
    workers: list[ChildProcess] = field(default_factory=list)

    def start_worker(self, model_dir: Path | None = None) -> ChildProcess:
        """A worker of this test's model, or of the export in model_dir."""
        settings = self.settings.model_copy(update={"model_dir": model_dir or self.model_dir})
        worker = start_worker(settings, self.log_dir, name=f"vworker{len(self.workers)}")
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


def expected(env: VectorizeEnv, texts: list[str], model_dir: Path | None = None) -> np.ndarray:
    config = EngineConfig.from_settings(env.settings)
    return Embedder.from_model_dir(model_dir or env.model_dir, config).embed(texts).vectors


def assert_exactly_right(
    env: VectorizeEnv,
    table: str,
    column: str = "embedding",
    model_dir: Path | None = None,
) -> int:
    """Every row with text holds in `column` its current text's vector from the model (this
    test's, or the export in model_dir); the others none. Returns the rows checked."""
    manifest_id = ModelManifest.read(model_dir or env.model_dir).manifest_id
    with env.connect() as conn:
        rows = conn.execute(
            f"SELECT id, title, body, {column}, {column}_manifest FROM {table}"
        ).fetchall()
    with_text = [r for r in rows if has_text(r[1], r[2])]
    assert all(r[3] is None and r[4] is None for r in rows if not has_text(r[1], r[2]))
    missing = [r[0] for r in with_text if r[3] is None or r[4] != manifest_id]
    assert not missing, f"{len(missing)} rows with text lack their vector, e.g. {missing[:5]}"
    stored = np.stack([r[3].to_numpy() for r in with_text])
    texts = [render(r[1], r[2]) for r in with_text]
    distinct = list(dict.fromkeys(texts))
    vector_of = dict(zip(distinct, expected(env, distinct, model_dir), strict=True))
    fresh = np.stack([vector_of[t] for t in texts])
    assert stored.shape == fresh.shape, (stored.shape, fresh.shape)
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
    pause_s: float = 0.005  # between statements
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
                self._stop.wait(self.pause_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
