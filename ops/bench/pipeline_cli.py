"""`embedq bench pipeline` and `embedq bench write-path`: the whole path (HTTP, broker, worker,
pgvector) and the vector writer alone, on an embedded stack."""

from __future__ import annotations

from pathlib import Path

import click

from ops.cli.config import configure


@click.command("write-path")
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
    from dataclasses import asdict

    from rich.console import Console

    from ops.bench.engine import machine_description, source_commit
    from ops.bench.pipeline_report import print_write_path
    from ops.bench.write_path import run_write_path_on_embedded_stack

    settings = configure(quiet=True)
    results = run_write_path_on_embedded_stack(settings, rows, dimension, batch)
    title = f"{dimension}-d vectors into pgvector, {batch} rows per transaction"
    print_write_path(Console(), results, title)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "commit": source_commit(),
        "machine": machine_description(),
        "batch": batch,
        "rows": [asdict(r) for r in results],
    }
    out_json.write_text(json.dumps(payload, indent=2) + "\n")


@click.command("pipeline")
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
@click.option(
    "--small-jobs",
    type=int,
    default=1000,
    show_default=True,
    help="Also submit this many of the texts as a burst of small jobs (0: skip), one batch per "
    "delivery and coalesced.",
)
@click.option("--texts-per-small-job", type=int, default=5, show_default=True)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Runs of each new-collection variant (in reversed order each time); with 2 or more, "
    "the median ratio of each is printed.",
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
    model_dir: Path | None,
    count: int,
    hnsw_variant: bool,
    small_jobs: int,
    texts_per_small_job: int,
    repeat: int,
    write_rows: int,
    out_json: Path,
) -> None:
    """Whole path against the bare engine on the same texts, the worker's own time split, and
    the write path alone (1024-d COPY + upsert against executemany)."""
    import json
    import time
    from dataclasses import asdict

    from rich.console import Console

    from ops.bench.engine import machine_description, machine_label, source_commit
    from ops.bench.pipeline import run_pipeline_bench, streams_run_here
    from ops.bench.pipeline_report import print_runs, print_write_path
    from ops.bench.write_path import run_write_path_on_embedded_stack
    from ops.devstack.bundled_model import bench_model_dir
    from workers.engine import EngineConfig

    settings = configure(quiet=True)
    model_dir = bench_model_dir(settings, model_dir)
    console = Console()
    small = (min(small_jobs, count), texts_per_small_job) if small_jobs > 0 else None
    runs = run_pipeline_bench(settings, model_dir, count, hnsw_variant, small, repeat)
    machine = machine_description()
    title = f"{count} texts, one worker, {machine_label(machine)}"
    medians = print_runs(console, runs, title)
    if not streams_run_here(model_dir, EngineConfig.from_settings(settings)):
        console.print("2 engine streams: not run (only OpenVINO runs more than one stream)")
    writes = run_write_path_on_embedded_stack(settings, write_rows, 1024, 512)
    print_write_path(console, writes, "write path alone: 1024-d vectors, 512 rows per transaction")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": source_commit(),
        "machine": machine,
        "model_dir": str(model_dir),
        "settings": {
            "max_batch_tokens": settings.max_batch_tokens,
            "max_batch_size": settings.max_batch_size,
            "items_per_task": settings.items_per_task,
            "tokens_per_task": settings.tokens_per_task,
            "coalesce_below_items": settings.coalesce_below_items,
        },
        "runs": [asdict(r) for r in runs],
        "median_ratio_to_engine": medians,
        "write_path": [asdict(w) for w in writes],
    }
    out_json.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {out_json}")
