"""`embedq bench ...`: benchmark commands that compare variants in one run."""

from __future__ import annotations

from pathlib import Path

import click

from ops.bench.pipeline_cli import bench_pipeline, bench_write_path
from ops.bench.rerank_cli import bench_rerank
from ops.bench.shapes import SHAPES
from ops.cli.config import configure


@click.group()
def bench() -> None:
    """Benchmarks: compare variants in one run, print a table, write JSON."""


@bench.command("engine")
@click.option(
    "--shape",
    type=click.Choice(sorted(SHAPES)),
    default=None,
    help="Bench a random-weight model with this architecture (ops/bench/shapes.py), built and "
    "exported once under the data directory; speed depends on shape, not weights.",
)
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="FP32 export of a real model (default: the bundled MiniLM, exported if needed).",
)
@click.option(
    "--source-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The Hugging Face directory of --model-dir, for the sentence-transformers peers.",
)
@click.option(
    "--threads", type=int, default=None, help="Threads for every variant (default: all cores)."
)
@click.option(
    "--batch-size", type=int, default=32, show_default=True, help="Our engine's texts per batch."
)
@click.option(
    "--peer-batch-size",
    type=int,
    default=None,
    help="sentence-transformers' batch_size (default: --batch-size). Keep it small in a budget "
    "sweep: a peer pads each batch to its longest text.",
)
@click.option("--sentences", type=int, default=1000, show_default=True, help="Bench-corpus texts.")
@click.option(
    "--passages", type=int, default=1000, show_default=True, help="Passages (50-450 tok)."
)
@click.option(
    "--repeats",
    type=int,
    default=None,
    help="Timed passes, best kept (default 2; 1 for a long-input shape such as bge-m3).",
)
@click.option(
    "--variants",
    default=None,
    help="Comma-separated subset (default: every peer and every variant of ours).",
)
@click.option(
    "--out",
    "out_json",
    type=click.Path(path_type=Path),
    default=Path("bench-results/engine.json"),
    show_default=True,
)
@click.option("--limit", type=int, default=None, help="Cap both corpora at N texts (smoke runs).")
@click.option(
    "--max-batch-tokens",
    "budgets",
    default=None,
    help="Comma-separated padded-token budgets of one engine batch: each of our variants runs "
    "once per budget (a sweep; raise --batch-size so the budget, not the count, closes a "
    "batch). Default: the settings' EMBEDQ_MAX_BATCH_TOKENS.",
)
def bench_engine(
    shape: str | None,
    model_dir: Path | None,
    source_dir: Path | None,
    threads: int | None,
    batch_size: int,
    peer_batch_size: int | None,
    sentences: int,
    passages: int,
    repeats: int | None,
    variants: str | None,
    out_json: Path,
    limit: int | None,
    budgets: str | None,
) -> None:
    """Our engine's variants against sentence-transformers (torch FP32, torch BF16, ONNX,
    OpenVINO) on short texts and on passages: throughput, fidelity, memory, share of peak.
    A long-input shape (bge-m3) runs texts of its lengths (512, 2,048, 8,192 tokens) instead,
    and a sparse one only our own variants by default (ONNX Runtime FP32 and the default CPU
    path here): no peers, and never INT8."""
    import importlib.util
    import os
    from dataclasses import replace

    from rich.console import Console

    from ops.bench.engine import DEFAULT_VARIANTS, LABELS, run_engine_bench
    from ops.bench.long_inputs import long_input_corpora, sparse_shape_variants
    from ops.bench.shape_models import (
        BenchModels,
        ensure_int8_openvino,
        ensure_shape_models,
        int8_refusal,
    )
    from ops.bench.shapes import shape_of_model_dir
    from ops.data.corpus import load_bench_corpus, load_bench_passages
    from ops.devstack.bundled_model import bundled_model_source, ensure_bundled_model
    from workers.engine import EngineConfig

    settings = configure(quiet=True)
    engine = replace(
        EngineConfig.from_settings(settings),
        intra_op_threads=threads or os.cpu_count() or 1,
        max_batch_size=batch_size,
    )
    console = Console()
    models_root = settings.data_dir.resolve() / "models"
    if shape is not None:
        if model_dir is not None:
            raise click.UsageError("--shape and --model-dir exclude each other")
        model_shape = SHAPES[shape]
        models = ensure_shape_models(model_shape, models_root, engine)
    else:
        if model_dir is None:
            model_dir = models_root / "all-minilm-l6-v2"
            ensure_bundled_model(model_dir, engine)
            source_dir = source_dir or bundled_model_source()
        if source_dir is None:
            raise click.UsageError("--source-dir is needed with --model-dir")
        int8_dir = model_dir.with_name(model_dir.name + "-int8-openvino")
        ensure_int8_openvino(model_dir, int8_dir, engine)
        models = BenchModels(source_dir, model_dir, int8_dir)
        model_shape = shape_of_model_dir(source_dir)
    refusal = int8_refusal(model_shape) if shape is not None else None
    defaults = sparse_shape_variants(models.fp32_dir) if refusal else list(DEFAULT_VARIANTS)
    chosen = variants.split(",") if variants else defaults
    if refusal and any("int8" in v for v in chosen):
        console.print(f"skipping the INT8 variants: {refusal}")
        chosen = [v for v in chosen if "int8" not in v]
    reference = defaults[0]
    unknown = [v for v in chosen if v not in LABELS]
    if unknown or not chosen or chosen[0] != reference:
        raise click.UsageError(
            f"--variants: {reference} first (the reference), then any of {sorted(LABELS)}"
        )
    if budgets:
        sizes = [int(b) for b in budgets.split(",")]
        if any(b < 16 for b in sizes):
            raise click.UsageError("--max-batch-tokens: budgets of at least 16 tokens")
        chosen = [
            f"{v}@{b}" if v.startswith("ours") else v
            for v in chosen
            for b in (sizes if v.startswith("ours") else [0])
        ]
    if importlib.util.find_spec("infinity_emb") is None:
        console.print("infinity-emb is not installed here: no infinity row")
    else:
        console.print("infinity-emb is installed, but this bench does not run it: no row")
    count = {"sentences": sentences, "passages": passages}
    if limit is not None:
        count = {k: min(v, limit) for k, v in count.items()}
    corpora = {
        "sentences": [t for _, t in load_bench_corpus()][: count["sentences"]],
        "passages": [t for _, t in load_bench_passages(max(count["passages"], 1))][
            : count["passages"]
        ],
    }
    warmup_texts = None
    if model_shape.long_inputs and shape is not None:
        # Minutes a pass at 8,192 tokens: one warm-up text a length, one timed pass.
        lengths = [(n, c if limit is None else min(c, limit)) for n, c in model_shape.long_inputs]
        corpora = long_input_corpora(models.fp32_dir / "tokenizer.json", lengths)
        warmup_texts, repeats = 1, repeats or 1
        console.print("random weights: speed depends on the shape, not the weights")
    corpora = {name: texts for name, texts in corpora.items() if texts}
    run_engine_bench(
        models, model_shape, shape is not None, corpora, engine, chosen, out_json, console,
        repeats or 2, warmup_texts, peer_batch_size,
    )  # fmt: skip


@bench.command("profile")
@click.option(
    "--shape",
    type=click.Choice(sorted(SHAPES)),
    default=None,
    help="Profile a random-weight model with this architecture (built once, as bench engine).",
)
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="An export to profile (default: the bundled MiniLM).",
)
@click.option("--int8", is_flag=True, help="With --shape: profile its int8-openvino export.")
@click.option("--texts", type=int, default=64, show_default=True, help="Bench passages to run.")
@click.option("--threads", type=int, default=None, help="Engine threads (default: all cores).")
@click.option(
    "--out",
    "out_json",
    type=click.Path(path_type=Path),
    default=Path("bench-results/profile.json"),
    show_default=True,
)
def bench_profile(
    shape: str | None,
    model_dir: Path | None,
    int8: bool,
    texts: int,
    threads: int | None,
    out_json: Path,
) -> None:
    """Where OpenVINO spends the engine's time on an export (per-node counters): dense layers,
    attention, LayerNorm, elementwise, reorders and conversions, by kernel."""
    import os
    from dataclasses import replace

    from rich.console import Console

    from ops.bench.profile import run_profile
    from ops.bench.shape_models import ensure_shape_models
    from ops.devstack.bundled_model import bench_model_dir
    from workers.engine import EngineConfig

    settings = configure(quiet=True)
    engine = replace(
        EngineConfig.from_settings(settings), intra_op_threads=threads or os.cpu_count() or 1
    )
    if shape is not None:
        if model_dir is not None:
            raise click.UsageError("--shape and --model-dir exclude each other")
        models = ensure_shape_models(SHAPES[shape], settings.data_dir.resolve() / "models", engine)
        model_dir = models.int8_dir if int8 else models.fp32_dir
    elif int8:
        raise click.UsageError("--int8 goes with --shape; give an INT8 export as --model-dir")
    else:
        model_dir = bench_model_dir(settings, model_dir)
    run_profile(model_dir, engine, texts, out_json, Console())


@bench.command("chunking")
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Export to serve (default: the bundled MiniLM, exported if needed).",
)
@click.option("--documents", type=int, default=1000, show_default=True)
@click.option("--min-chars", type=int, default=2000, show_default=True)
@click.option("--max-chars", type=int, default=20000, show_default=True)
@click.option(
    "--max-tokens",
    type=int,
    default=None,
    help="Chunk size in tokens (default: the model's max length less its 2 special tokens).",
)
@click.option("--overlap-tokens", type=int, default=0, show_default=True)
@click.option(
    "--out",
    "out_json",
    type=click.Path(path_type=Path),
    default=Path("bench-results/chunking.json"),
    show_default=True,
)
def bench_chunking(
    model_dir: Path | None,
    documents: int,
    min_chars: int,
    max_chars: int,
    max_tokens: int | None,
    overlap_tokens: int,
    out_json: Path,
) -> None:
    """Long documents cut by the worker (a chunking collection) against the same chunks cut
    by the client: documents/s, chunks/s and tokens/s through the API, a worker and Postgres."""
    from rich.console import Console

    from embedq_core.catalog import SPECIAL_TOKENS, Chunking
    from embedq_core.manifest import ModelManifest
    from ops.bench.chunking import run_chunking_bench
    from ops.devstack.bundled_model import bench_model_dir

    settings = configure(quiet=True)
    model_dir = bench_model_dir(settings, model_dir)
    window = max_tokens or ModelManifest.read(model_dir).max_length - SPECIAL_TOKENS
    run_chunking_bench(
        settings, model_dir, documents, min_chars, max_chars, Chunking(window, overlap_tokens),
        out_json, Console(),
    )  # fmt: skip


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
    from ops.devstack.bundled_model import bench_model_dir

    settings = configure(quiet=True)
    model_dir = bench_model_dir(settings, model_dir)
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
@click.option(
    "--reranker-dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Also time /v1/rerank, served by a worker of this reranker.",
)
@click.option(
    "--rerank-candidates",
    type=int,
    multiple=True,
    help="Candidates per /v1/rerank call (repeatable; default: 20, then 100).",
)
@click.option(
    "--preemptions",
    type=int,
    multiple=True,
    help="Run the bulk phase with each of these EMBEDQ_MAX_PREEMPTIONS_PER_BATCH (repeatable; "
    "default: the setting's value, then 0).",
)
@click.option(
    "--max-batch-tokens",
    "budgets",
    type=click.IntRange(min=16),
    multiple=True,
    help="Run the bulk phase with each of these EMBEDQ_MAX_BATCH_TOKENS, each with every "
    "preemption setting (repeatable; default: the setting's value).",
)
def bench_query(
    model_dir: Path | None,
    calls: int,
    bulk_texts: int,
    out_json: Path,
    reranker_dir: Path | None,
    preemptions: tuple[int, ...],
    rerank_candidates: tuple[int, ...],
    budgets: tuple[int, ...],
) -> None:
    """p50/p95/p99 of single-text /v1/embeddings and /search calls (and /v1/rerank with a
    reranker), idle and under bulk load, the bulk phase once per engine batch budget and
    preemption setting."""
    from rich.console import Console

    from ops.bench.query import RERANK_COUNTS, run_query_bench
    from ops.devstack.bundled_model import bench_model_dir

    settings = configure(quiet=True)
    model_dir = bench_model_dir(settings, model_dir)
    run_query_bench(
        settings, model_dir, calls, bulk_texts, out_json, Console(), reranker_dir, preemptions,
        rerank_candidates or RERANK_COUNTS, budgets,
    )  # fmt: skip


bench.add_command(bench_write_path)
bench.add_command(bench_pipeline)
bench.add_command(bench_rerank)


@bench.command("mine")
@click.option(
    "--rows",
    "sizes",
    default="20000,100000",
    show_default=True,
    help="Corpus sizes to bench, comma-separated.",
)
@click.option("--queries", type=int, default=1000, show_default=True, help="Timed with HNSW.")
@click.option(
    "--exact-queries", type=int, default=100, show_default=True, help="Timed exactly (slow)."
)
@click.option("--dimension", type=int, default=1024, show_default=True, help="bge-large: 1024.")
@click.option(
    "--out",
    "out_json",
    type=click.Path(path_type=Path),
    default=Path("bench-results/mine.json"),
    show_default=True,
)
def bench_mine(
    sizes: str, queries: int, exact_queries: int, dimension: int, out_json: Path
) -> None:
    """Query lines/s of embedq mine's candidate search: HNSW against exact, by corpus size."""
    from rich.console import Console

    from ops.bench.mine import run_mine_bench

    settings = configure(quiet=True)
    rows = [int(size) for size in sizes.split(",")]
    run_mine_bench(
        settings, rows, queries, min(exact_queries, queries), dimension, out_json, Console()
    )


@bench.command("vectorize")
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Export to embed with (default: the bundled MiniLM, exported if needed).",
)
@click.option("--inserts", type=int, default=2000, show_default=True, help="Per table, timed.")
@click.option(
    "--rates", default="50,100,200", show_default=True, help="Insert rates (rows/s) to run."
)
@click.option("--duration", "duration_s", type=float, default=30.0, show_default=True)
@click.option(
    "--out",
    "out_json",
    type=click.Path(path_type=Path),
    default=Path("bench-results/vectorize.json"),
    show_default=True,
)
def bench_vectorize(
    model_dir: Path | None, inserts: int, rates: str, duration_s: float, out_json: Path
) -> None:
    """A vectorizer's cost per INSERT and its lag under a steady insert stream."""
    from rich.console import Console

    from ops.bench.vectorize import run_vectorize_bench
    from ops.devstack.bundled_model import bench_model_dir

    settings = configure(quiet=True)
    model_dir = bench_model_dir(settings, model_dir)
    run_vectorize_bench(
        settings,
        model_dir,
        inserts,
        [float(r) for r in rates.split(",")],
        duration_s,
        out_json,
        Console(),
    )
