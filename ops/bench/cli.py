"""`embedq bench ...`: benchmark commands that compare variants in one run."""

from __future__ import annotations

from pathlib import Path

import click

from ops.config import configure


@click.group()
def bench() -> None:
    """Benchmarks: compare variants in one run, print a table, write JSON."""


@bench.command("engine")
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="FP32 export to benchmark (default: the bundled MiniLM, exported if needed).",
)
@click.option(
    "--int8-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="INT8 export (default: MODEL_DIR-int8, exported if needed).",
)
@click.option(
    "--source-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The Hugging Face directory of the model, for the torch/ST references.",
)
@click.option(
    "--threads", type=int, default=None, help="Threads for every variant (default: all cores)."
)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option(
    "--out",
    "out_json",
    type=click.Path(path_type=Path),
    default=Path("bench-results/engine.json"),
    show_default=True,
)
@click.option(
    "--infinity-python",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Python of a venv with infinity-emb[optimum], to add its engine to the table.",
)
@click.option("--limit", type=int, default=None, help="Only the first N corpus texts (smoke runs).")
def bench_engine(
    model_dir: Path | None,
    int8_dir: Path | None,
    source_dir: Path | None,
    threads: int | None,
    batch_size: int,
    out_json: Path,
    infinity_python: Path | None,
    limit: int | None,
) -> None:
    """Throughput, padding, memory and fidelity of every engine variant on the bench corpus."""
    import os
    from dataclasses import replace

    from rich.console import Console

    from ops.bench.engine import run_engine_bench
    from ops.bundled_model import BUNDLED_MODEL_ID, bundled_model_source, ensure_bundled_model
    from ops.export_model import ExportOptions, export_model
    from workers.engine import EngineConfig

    settings = configure(quiet=True)
    engine = replace(
        EngineConfig.from_settings(settings),
        intra_op_threads=threads or os.cpu_count() or 1,
        max_batch_size=batch_size,
    )
    model_dir = model_dir or settings.data_dir.resolve() / "models" / "all-minilm-l6-v2"
    manifest = (
        ensure_bundled_model(model_dir, engine)
        if not (model_dir / "embedq_manifest.json").exists()
        else None
    )
    from embedq_core.manifest import ModelManifest

    manifest = manifest or ModelManifest.read(model_dir)
    if source_dir is None:
        if Path(manifest.source).is_dir():
            source_dir = Path(manifest.source)
        elif manifest.source == BUNDLED_MODEL_ID:
            source_dir = bundled_model_source()
        else:
            raise click.UsageError("--source-dir is needed: the manifest's source is a hub id")
    int8_dir = int8_dir or model_dir.with_name(model_dir.name + "-int8")
    if not (int8_dir / "embedq_manifest.json").exists():
        export_model(
            str(source_dir),
            int8_dir,
            ExportOptions(quantize="int8", source_id=manifest.source),
            engine,
        )
    run_engine_bench(
        model_dir,
        int8_dir,
        source_dir,
        engine,
        out_json,
        infinity_python,
        Console(),
        limit,
    )


@bench.command("migrate")
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Export to migrate to (default: the bundled MiniLM, exported if needed).",
)
@click.option("--rows", type=int, default=5000, show_default=True)
@click.option("--chunk-size", type=int, default=256, show_default=True)
@click.option(
    "--out",
    "out_json",
    type=click.Path(path_type=Path),
    default=Path("bench-results/migrate.json"),
    show_default=True,
)
def bench_migrate(model_dir: Path | None, rows: int, chunk_size: int, out_json: Path) -> None:
    """Rows/s of a re-embedding migration next to the bare engine's, on the same rows."""
    from rich.console import Console

    from ops.bench.migrate import run_migrate_bench
    from ops.bundled_model import ensure_bundled_model
    from workers.engine import EngineConfig

    settings = configure(quiet=True)
    if model_dir is None:
        model_dir = settings.data_dir.resolve() / "models" / "all-minilm-l6-v2"
        ensure_bundled_model(model_dir, EngineConfig.from_settings(settings))
    run_migrate_bench(settings, model_dir, rows, chunk_size, out_json, Console())


@bench.command("query")
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Export to serve (default: the bundled MiniLM, exported if needed).",
)
@click.option("--calls", type=int, default=200, show_default=True, help="Calls per endpoint.")
@click.option(
    "--bulk-texts", type=int, default=5000, show_default=True, help="Texts of the bulk job."
)
@click.option(
    "--out",
    "out_json",
    type=click.Path(path_type=Path),
    default=Path("bench-results/query.json"),
    show_default=True,
)
def bench_query(model_dir: Path | None, calls: int, bulk_texts: int, out_json: Path) -> None:
    """p50/p95/p99 of single-text /v1/embeddings and /search calls, idle and under bulk load."""
    from rich.console import Console

    from ops.bench.query import run_query_bench
    from ops.bundled_model import ensure_bundled_model
    from workers.engine import EngineConfig

    settings = configure(quiet=True)
    if model_dir is None:
        model_dir = settings.data_dir.resolve() / "models" / "all-minilm-l6-v2"
        ensure_bundled_model(model_dir, EngineConfig.from_settings(settings))
    run_query_bench(settings, model_dir, calls, bulk_texts, out_json, Console())


@bench.command("write-path")
@click.option("--rows", type=int, default=20_000, show_default=True)
@click.option("--dimension", type=int, default=1024, show_default=True)
@click.option("--batch", type=int, default=512, show_default=True, help="Rows per transaction.")
@click.option(
    "--out",
    "out_json",
    type=click.Path(path_type=Path),
    default=Path("bench-results/write-path.json"),
    show_default=True,
)
def bench_write_path(rows: int, dimension: int, batch: int, out_json: Path) -> None:
    """Rows/s of the workers' vector writer (binary COPY + upsert) against executemany, and
    with the HNSW index present, on an embedded Postgres."""
    import json
    import tempfile
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from migrations.schema_upgrade import upgrade_head
    from ops.bench.engine import machine_description
    from ops.bench.write_path import run_write_path
    from ops.devstack import EmbeddedStack

    settings = configure(quiet=True)
    with (
        tempfile.TemporaryDirectory() as data_dir,
        EmbeddedStack(settings, Path(data_dir)) as stack,
    ):
        database_url = stack.settings().require_database_url()
        upgrade_head(database_url)
        results = run_write_path(database_url, rows, dimension, batch)
    table = Table(title=f"{dimension}-d vectors into pgvector, {batch} rows per transaction")
    for column in ("variant", "rows", "seconds", "rows/s", "vs executemany"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    baseline = next(r.rows_per_s for r in results if r.variant.startswith("executemany"))
    for r in results:
        ratio = f"{r.rows_per_s / baseline:.2f}×"
        table.add_row(r.variant, str(r.rows), f"{r.seconds:.2f}", f"{r.rows_per_s:,.0f}", ratio)
    Console().print(table)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine_description(),
        "batch": batch,
        "rows": [asdict(r) for r in results],
    }
    out_json.write_text(json.dumps(payload, indent=2) + "\n")


@bench.command("pipeline")
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Export to run (default: the bundled MiniLM, exported if needed).",
)
@click.option("--texts", "count", type=int, default=5000, show_default=True)
@click.option(
    "--hnsw-variant/--no-hnsw-variant",
    default=True,
    show_default=True,
    help="Also run the whole path into a table that already has its HNSW index.",
)
@click.option("--write-rows", type=int, default=20_000, show_default=True)
@click.option(
    "--out",
    "out_json",
    type=click.Path(path_type=Path),
    default=Path("bench-results/pipeline.json"),
    show_default=True,
)
def bench_pipeline(
    model_dir: Path | None, count: int, hnsw_variant: bool, write_rows: int, out_json: Path
) -> None:
    """Whole path against the bare engine on the same texts, the worker's own time split, and
    the write path alone (1024-d COPY + upsert against executemany)."""
    import json
    import tempfile
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from migrations.schema_upgrade import upgrade_head
    from ops.bench.engine import machine_description
    from ops.bench.pipeline import run_pipeline_bench
    from ops.bench.write_path import run_write_path
    from ops.bundled_model import ensure_bundled_model
    from ops.devstack import EmbeddedStack
    from workers.engine import EngineConfig

    settings = configure(quiet=True)
    if model_dir is None:
        model_dir = settings.data_dir.resolve() / "models" / "all-minilm-l6-v2"
        ensure_bundled_model(model_dir, EngineConfig.from_settings(settings))
    console = Console()
    runs = run_pipeline_bench(settings, model_dir, count, hnsw_variant)
    machine = machine_description()
    table = Table(title=f"{count} texts, one worker, {machine['cpu']} ({machine['cores']} cores)")
    # The worker's own stage times; what is left of the wall time is broker hops and idling.
    stages = ("claim", "tokenize", "engine", "write")
    for column in ("variant", "seconds", "texts/s", "× bare engine", *stages, "broker+idle"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for run in runs:
        split = [f"{run.split_s[s]:.1f}s" if s in run.split_s else "" for s in stages]
        busy = sum(run.split_s.get(s, 0.0) for s in stages)
        split.append(f"{run.seconds - busy:.1f}s" if run.split_s else "")
        table.add_row(
            run.variant,
            f"{run.seconds:.1f}",
            f"{run.texts_per_s:.0f}",
            f"{run.ratio_to_engine:.2f}",
            *split,
        )
    console.print(table)
    with (
        tempfile.TemporaryDirectory() as data_dir,
        EmbeddedStack(settings, Path(data_dir)) as stack,
    ):
        database_url = stack.settings().require_database_url()
        upgrade_head(database_url)
        writes = run_write_path(database_url, write_rows, 1024, 512)
    write_table = Table(title="write path alone: 1024-d vectors, 512 rows per transaction")
    for column in ("variant", "rows", "rows/s"):
        write_table.add_column(column, justify="left" if column == "variant" else "right")
    for w in writes:
        write_table.add_row(w.variant, str(w.rows), f"{w.rows_per_s:,.0f}")
    console.print(write_table)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine,
        "model_dir": str(model_dir),
        "settings": {
            "max_batch_tokens": settings.max_batch_tokens,
            "max_batch_size": settings.max_batch_size,
            "items_per_task": settings.items_per_task,
        },
        "runs": [asdict(r) for r in runs],
        "write_path": [asdict(w) for w in writes],
    }
    out_json.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {out_json}")
