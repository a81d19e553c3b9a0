"""`embedq bench rerank`: the command; the bench itself is ops/bench/rerank.py."""

from __future__ import annotations

from pathlib import Path

import click

from ops.bench.rerank_shapes import RERANKER_SHAPES
from ops.cli.config import configure


@click.command("rerank")
@click.option(
    "--shape",
    type=click.Choice(sorted(RERANKER_SHAPES)),
    default="bge-reranker-v2-m3",
    show_default=True,
    help="A random-weight cross-encoder with this architecture (ops/bench/rerank_shapes.py), "
    "built and exported once under the data directory; speed depends on shape, not weights.",
)
@click.option(
    "--lengths",
    default="128,512,2048",
    show_default=True,
    help="Passage lengths in tokens, comma-separated (each beyond the model's length is left out).",
)
@click.option("--pairs", type=int, default=32, show_default=True, help="Pairs per length.")
@click.option(
    "--threads", type=int, default=None, help="Threads for every variant (default: all cores)."
)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--repeats", type=int, default=2, show_default=True, help="Timed passes, best kept.")
@click.option(
    "--variants",
    default=None,
    help="Comma-separated subset (default: every CrossEncoder peer and every variant of ours "
    "this CPU runs).",
)
@click.option(
    "--out",
    "out_json",
    type=click.Path(path_type=Path),
    default=Path("bench-results/rerank.json"),
    show_default=True,
)
def bench_rerank(
    shape: str,
    lengths: str,
    pairs: int,
    threads: int | None,
    batch_size: int,
    repeats: int,
    variants: str | None,
    out_json: Path,
) -> None:
    """Our reranker against sentence-transformers' CrossEncoder (torch FP32, torch BF16, ONNX,
    OpenVINO) on the same query-passage pairs at each passage length: pairs/s, tokens/s,
    fidelity (logit error and top-10 agreement against torch FP32), memory."""
    import os

    from rich.console import Console

    from ops.bench.rerank import LABELS, build_pairs, default_variants, run_rerank_bench
    from ops.bench.rerank_shapes import ensure_reranker_models
    from ops.data.corpus import load_bench_passages, load_demo_corpus
    from workers.engine import EngineConfig

    settings = configure(quiet=True)
    model_shape = RERANKER_SHAPES[shape]
    texts = [t for _, t in load_bench_passages()] + [t for _, t in load_demo_corpus()]
    engine = EngineConfig.from_settings(settings)
    defaults, skipped = default_variants()
    chosen = variants.split(",") if variants else defaults
    unknown = [v for v in chosen if v not in LABELS]
    if unknown:
        raise click.UsageError(f"unknown variants {unknown}; known: {', '.join(LABELS)}")
    source_dir, fp32_dir, int8_dir = ensure_reranker_models(
        model_shape,
        settings.data_dir.resolve() / "models",
        texts,
        engine,
        int8="ours-ov-int8" in chosen,
    )
    wanted = [int(n) for n in lengths.split(",") if n.strip()]
    corpora, left_out = build_pairs(fp32_dir / "tokenizer.json", model_shape, wanted, pairs)
    run_rerank_bench(
        model_shape,
        source_dir,
        fp32_dir,
        int8_dir,
        corpora,
        chosen,
        threads or os.cpu_count() or 1,
        batch_size,
        repeats,
        out_json,
        Console(),
        [*skipped, *left_out],
    )
