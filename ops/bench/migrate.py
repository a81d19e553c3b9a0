"""`embedq bench migrate`: a re-embedding migration's rows/s next to the bare engine's on the
same rows, in one run."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from rich.console import Console
from rich.table import Table

from embedq_core.catalog import register_model_dir
from embedq_core.db import libpq_url, make_engine
from embedq_core.manifest import ModelManifest
from embedq_core.settings import Settings
from migrations.reembed.backfill import StepOptions, run_step
from migrations.reembed.control import start
from migrations.reembed.locking import LockPolicy
from migrations.reembed.planning import draft_migration
from migrations.reembed.state import load
from migrations.reembed.target import resolve_target
from migrations.schema_upgrade import upgrade_head
from ops.bench.engine import machine_description, machine_label, source_commit
from ops.data.corpus import load_bench_corpus
from ops.devstack.processes import start_worker
from ops.devstack.stack import EmbeddedStack
from workers.engine import Embedder, EngineConfig
from workers.reembed_source import EmbedderSource

LEGACY_DIMENSION = 312


@dataclass
class MigrateRow:
    """One line of the table."""

    variant: str
    rows: int
    seconds: float
    rows_per_s: float
    ratio_to_engine: float


def _texts(rows: int) -> list[str]:
    corpus = [text for _, text in load_bench_corpus()]
    return [f"{corpus[i % len(corpus)]} #{i}" for i in range(rows)]


def _make_table(conn: psycopg.Connection[Any], table: str, texts: list[str]) -> None:
    # Legacy vectors are random: the benchmark measures the migration, not the old model.
    legacy = np.random.default_rng(0).standard_normal((len(texts), LEGACY_DIMENSION))
    name = sql.Identifier(table)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
    conn.execute("DELETE FROM reembed_migrations WHERE name = %s", (table,))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (id bigint PRIMARY KEY, body text NOT NULL, embedding vector({}))"
        ).format(name, sql.Literal(LEGACY_DIMENSION))
    )
    copy_sql = sql.SQL("COPY {} (id, body, embedding) FROM STDIN").format(name)
    with conn.cursor().copy(copy_sql) as copy:
        for i, (text, vector) in enumerate(zip(texts, legacy.astype(np.float32), strict=True)):
            copy.write_row((i + 1, text, vector))


def _start(
    conn: psycopg.Connection[Any],
    settings: Settings,
    table: str,
    model_dir: Path,
    chunk_size: int,
    celery: Any,
) -> None:
    engine = make_engine(settings.require_database_url(), pool_size=1)
    with engine.begin() as sa_conn:
        register_model_dir(sa_conn, model_dir)
    engine.dispose()
    manifest = ModelManifest.read(model_dir)
    target = resolve_target(conn, table, "id", "body", "embedding")
    draft = draft_migration(target, table, f"embedding_{manifest.dimension}", manifest, chunk_size)
    start(conn, draft, celery, LockPolicy.from_settings(settings))


def _backfill_seconds(conn: psycopg.Connection[Any], name: str) -> float:
    row = conn.execute(
        "SELECT extract(epoch FROM max(finished_at) - min(finished_at)),"
        " (array_agg(seconds ORDER BY chunk_no))[1]"
        " FROM reembed_chunks WHERE migration = %s AND phase = 'keyset'",
        (name,),
    ).fetchone()
    assert row is not None and row[0] is not None
    return float(row[0]) + float(row[1])  # first chunk's own time + wall time after it


class _NullCelery:
    """For in-process runs: steps are driven by the benchmark loop, not by messages."""

    def send_task(self, *args: Any, **kwargs: Any) -> None:
        return None


def run_migrate_bench(
    settings: Settings,
    model_dir: Path,
    rows: int,
    chunk_size: int,
    out_json: Path,
    console: Console,
) -> list[MigrateRow]:
    """Bare engine, in-process migration steps, and a real worker, on the same rows."""
    texts = _texts(rows)
    embedder = Embedder.from_model_dir(model_dir, EngineConfig.from_settings(settings))
    embedder.embed(texts[:chunk_size])  # warm-up
    started = time.perf_counter()
    for i in range(0, rows, chunk_size):
        embedder.embed(texts[i : i + chunk_size])
    engine_s = time.perf_counter() - started
    results = [
        MigrateRow(
            f"bare engine ({embedder.backend}), chunks of {chunk_size}",
            rows,
            engine_s,
            rows / engine_s,
            1.0,
        )
    ]

    with (
        tempfile.TemporaryDirectory() as data_dir,
        EmbeddedStack(settings, Path(data_dir)) as stack,
    ):
        run_settings = stack.settings().model_copy(
            update={"model_dir": model_dir, "reembed_chunk_size": chunk_size}
        )
        upgrade_head(run_settings.require_database_url())
        with psycopg.connect(
            libpq_url(run_settings.require_database_url()), autocommit=True
        ) as conn:
            register_vector(conn)
            console.print("migration, steps in this process …")
            _make_table(conn, "bench_inproc", texts)
            _start(conn, run_settings, "bench_inproc", model_dir, chunk_size, _NullCelery())
            token = load(conn, "bench_inproc").step_token or ""
            source = EmbedderSource(embedder)
            while load(conn, "bench_inproc").phase == "keyset":
                options = replace(StepOptions.from_settings(run_settings), follow_interval_s=1.0)
                run_step(conn, source, "bench_inproc", token, options)
            seconds = _backfill_seconds(conn, "bench_inproc")
            results.append(
                MigrateRow(
                    "migration, steps in-process (no queue)",
                    rows,
                    seconds,
                    rows / seconds,
                    engine_s / seconds,
                )
            )

            console.print("migration through a Celery worker process …")
            _make_table(conn, "bench_worker", texts)
            worker = start_worker(run_settings, Path(data_dir) / "logs")
            try:
                from embedq_core.queueing import make_celery

                _start(
                    conn,
                    run_settings,
                    "bench_worker",
                    model_dir,
                    chunk_size,
                    make_celery(run_settings),
                )
                deadline = time.monotonic() + 1800
                while load(conn, "bench_worker").phase == "keyset":
                    if time.monotonic() > deadline or not worker.alive():
                        raise RuntimeError(f"migration did not finish:\n{worker.log_tail()}")
                    time.sleep(0.2)
            finally:
                worker.stop()
            seconds = _backfill_seconds(conn, "bench_worker")
            results.append(
                MigrateRow(
                    "migration, Celery worker (queue hop per chunk)",
                    rows,
                    seconds,
                    rows / seconds,
                    engine_s / seconds,
                )
            )

    table = Table(
        title=f"re-embedding {rows} rows, {embedder.manifest.source} "
        f"({embedder.manifest.dimension}-d), {machine_label(machine_description())}"
    )
    for column in ("variant", "rows", "seconds", "rows/s", "× bare engine"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for r in results:
        table.add_row(
            r.variant,
            str(r.rows),
            f"{r.seconds:.1f}",
            f"{r.rows_per_s:.0f}",
            f"{r.ratio_to_engine:.2f}",
        )
    console.width = max(console.width, 120)
    console.print(table)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(
        json.dumps(
            {
                "benchmark": "migrate",
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "commit": source_commit(),
                "machine": machine_description(),
                "model": {
                    "manifest_id": embedder.manifest.manifest_id,
                    "source": embedder.manifest.source,
                    "backend": embedder.backend,
                },
                "chunk_size": chunk_size,
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {out_json}")
    return results
