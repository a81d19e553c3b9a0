"""`embedq bench vectorize`: what a table vectorizer costs its writers and how far behind them
its vectors are. Writer overhead: single-row INSERTs (autocommit, one client) into a plain
table and into the same table bound to a vectorizer, alternating, no worker running (so only
the trigger and the partial indexes are timed). Lag: a worker serving the model while one
client inserts sentence-length rows at a steady rate; a row's lag is from its INSERT to the
UPDATE that writes its vector (a bench-only trigger stamps it; the commit follows within
milliseconds)."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from embedq_core.catalog import register_model_dir
from embedq_core.db import libpq_url, make_engine
from embedq_core.manifest import ModelManifest
from embedq_core.queueing import make_celery
from embedq_core.settings import Settings
from migrations.reembed.control import start
from migrations.reembed.locking import LockPolicy
from migrations.reembed.state import load
from migrations.reembed.vectorizer import draft_vectorizer, drop
from migrations.schema_upgrade import upgrade_head
from ops.bench.engine import machine_description, machine_label, source_commit
from ops.data.corpus import load_demo_corpus
from ops.devstack.processes import start_worker
from ops.devstack.stack import EmbeddedStack


@dataclass
class OverheadRow:
    """Single-row INSERT latency into one table."""

    table: str
    inserts: int
    mean_ms: float
    p50_ms: float
    p95_ms: float


@dataclass
class LagRow:
    """Lag at one insert rate."""

    target_rows_per_s: float
    achieved_rows_per_s: float
    rows: int
    lag_p50_s: float
    lag_p95_s: float
    lag_max_s: float


class _NoSteps:
    """The overhead run binds the table but embeds nothing: no step is sent."""

    def send_task(self, *args: Any, **kwargs: Any) -> None:
        return None


def _texts() -> list[str]:
    """Sentence-length texts (the demo corpus: short Chinese and English sentences)."""
    return [text for _, text in load_demo_corpus()]


def _create(conn: psycopg.Connection[Any], table: str) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(
        f"CREATE TABLE {table} (id bigserial PRIMARY KEY, body text,"
        " inserted_at timestamptz NOT NULL DEFAULT clock_timestamp(), embedded_at timestamptz)"
    )


def _bind(
    conn: psycopg.Connection[Any],
    settings: Settings,
    table: str,
    manifest: ModelManifest,
    celery: Any,
) -> None:
    draft = draft_vectorizer(
        conn, table, table, "id", "body", None, "embedding", manifest, settings.reembed_chunk_size
    )
    start(conn, draft, celery, LockPolicy.from_settings(settings))


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)]


def _overhead(conn: psycopg.Connection[Any], inserts: int, texts: list[str]) -> list[OverheadRow]:
    timings: dict[str, list[float]] = {"plain": [], "bound": []}
    for i in range(inserts * 2):
        table = "plain" if i % 2 == 0 else "bound"
        started = time.perf_counter()
        conn.execute(f"INSERT INTO {table} (body) VALUES (%s)", (texts[i % len(texts)],))
        timings[table].append((time.perf_counter() - started) * 1000)
    return [
        OverheadRow(
            "plain table" if table == "plain" else "bound to a vectorizer",
            len(ms),
            statistics.fmean(ms),
            _percentile(ms, 0.5),
            _percentile(ms, 0.95),
        )
        for table, ms in timings.items()
    ]


def _stamp_embedding(conn: psycopg.Connection[Any], table: str) -> None:
    conn.execute(
        "CREATE FUNCTION bench_embedded() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " NEW.embedded_at := clock_timestamp(); RETURN NEW; END $$"
    )
    conn.execute(
        f"CREATE TRIGGER bench_embedded BEFORE UPDATE OF embedding ON {table} FOR EACH ROW"
        " WHEN (OLD.embedding IS NULL AND NEW.embedding IS NOT NULL)"
        " EXECUTE FUNCTION bench_embedded()"
    )


def _lag_at(
    conn: psycopg.Connection[Any], rate: float, duration_s: float, texts: list[str], n: int
) -> tuple[LagRow, int]:
    first = conn.execute("SELECT coalesce(max(id), 0) FROM stream").fetchone()
    first_id = int(first[0]) if first else 0
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < duration_s:
        due = int(elapsed * rate) + 1
        while sent < due:
            conn.execute("INSERT INTO stream (body) VALUES (%s)", (f"{texts[n % len(texts)]} {n}",))
            sent += 1
            n += 1
        time.sleep(max(0.0, (sent / rate) - (time.monotonic() - started)))
    achieved = sent / (time.monotonic() - started)
    deadline = time.monotonic() + 300
    while True:
        left = conn.execute(
            "SELECT count(*) FROM stream WHERE id > %s AND embedded_at IS NULL", (first_id,)
        ).fetchone()
        if left == (0,) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    lags = [
        float(r[0])
        for r in conn.execute(
            "SELECT extract(epoch FROM embedded_at - inserted_at) FROM stream"
            " WHERE id > %s AND embedded_at IS NOT NULL",
            (first_id,),
        )
    ]
    if left != (0,):
        raise RuntimeError(f"{left} rows were still waiting after 5 minutes at {rate} rows/s")
    row = LagRow(
        rate, achieved, len(lags), _percentile(lags, 0.5), _percentile(lags, 0.95), max(lags)
    )
    return row, n


def run_vectorize_bench(
    settings: Settings,
    model_dir: Path,
    inserts: int,
    rates: list[float],
    duration_s: float,
    out_json: Path,
    console: Console,
) -> tuple[list[OverheadRow], list[LagRow]]:
    """Writer overhead, then lag at each rate, on an embedded stack of its own."""
    texts = _texts()
    with (
        tempfile.TemporaryDirectory() as data_dir,
        EmbeddedStack(settings, Path(data_dir)) as stack,
    ):
        run_settings = stack.settings().model_copy(update={"model_dir": model_dir})
        url = run_settings.require_database_url()
        upgrade_head(url)
        engine = make_engine(url, pool_size=1)
        with engine.begin() as sa_conn:
            manifest = register_model_dir(sa_conn, model_dir)
        engine.dispose()
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            console.print(f"writer overhead: {inserts:,} single-row INSERTs per table …")
            for table in ("plain", "bound"):
                _create(conn, table)
            _bind(conn, run_settings, "bound", manifest, _NoSteps())
            overhead = _overhead(conn, inserts, texts)
            # Its 2,000 rows would otherwise be embedded by the worker below, beside the stream.
            drop(conn, "bound", LockPolicy.from_settings(run_settings), drop_columns=True)

            console.print("lag under a steady insert stream, one worker …")
            _create(conn, "stream")
            worker = start_worker(run_settings, Path(data_dir) / "logs")
            lags: list[LagRow] = []
            try:
                _bind(conn, run_settings, "stream", manifest, make_celery(run_settings))
                _stamp_embedding(conn, "stream")
                deadline = time.monotonic() + 600
                while load(conn, "stream").phase != "following":
                    if time.monotonic() > deadline or not worker.alive():
                        raise RuntimeError(f"the vectorizer did not start:\n{worker.log_tail()}")
                    time.sleep(0.2)
                n = 0
                for rate in rates:
                    console.print(f"  {rate:g} rows/s for {duration_s:g} s")
                    row, n = _lag_at(conn, rate, duration_s, texts, n)
                    lags.append(row)
            finally:
                worker.stop()
    _print(console, overhead, lags, manifest)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(
        json.dumps(
            {
                "bench": "vectorize",
                "commit": source_commit(),
                "machine": machine_description(),
                "model": {"source": manifest.source, "manifest_id": manifest.manifest_id},
                "settings": {
                    "vectorize_follow_interval_s": run_settings.vectorize_follow_interval_s,
                    "reembed_chunk_size": run_settings.reembed_chunk_size,
                },
                "duration_s": duration_s,
                "overhead": [asdict(r) for r in overhead],
                "lag": [asdict(r) for r in lags],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    console.print(f"wrote {out_json}")
    return overhead, lags


def _print(
    console: Console, overhead: list[OverheadRow], lags: list[LagRow], manifest: ModelManifest
) -> None:
    machine = machine_label(machine_description())
    table = Table(title=f"single-row INSERT, {machine}")
    for column in ("table", "inserts", "mean ms", "p50 ms", "p95 ms"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for o in overhead:
        table.add_row(
            o.table, f"{o.inserts:,}", f"{o.mean_ms:.3f}", f"{o.p50_ms:.3f}", f"{o.p95_ms:.3f}"
        )
    console.print(table)
    table = Table(title=f"lag, one worker of {manifest.source}, {machine}")
    for column in ("rows/s asked", "rows/s sent", "rows", "lag p50 s", "lag p95 s", "lag max s"):
        table.add_column(column, justify="right")
    for r in lags:
        table.add_row(
            f"{r.target_rows_per_s:g}", f"{r.achieved_rows_per_s:.1f}", f"{r.rows:,}",
            f"{r.lag_p50_s:.2f}", f"{r.lag_p95_s:.2f}", f"{r.lag_max_s:.2f}",
        )  # fmt: skip
    console.print(table)
