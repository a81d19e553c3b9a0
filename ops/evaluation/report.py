"""What `embedq eval` shows and writes: a rich table, a JSON file, a score-distribution plot."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from embedq_core.sparse_vectors import STORED_SPARSE_TOKENS
from ops.evaluation.dataset import EvalSet
from ops.evaluation.metrics import METRICS, POOLS
from ops.evaluation.run import ModelRun

LABELS = {
    "recall@1": "recall@1",
    "recall@5": "recall@5",
    "recall@10": "recall@10",
    "mrr@1": "MRR@1",
    "mrr@10": "MRR@10",
    "cos_gap": "cos pos − neg",
}


class MissingExtraError(RuntimeError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def require_matplotlib() -> None:
    """Fail early (before any embedding) if --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            "--plot needs matplotlib: pip install 'embedq[eval]' (or pip install matplotlib)"
        ) from exc


def _cell(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def build_table(eval_set: EvalSet, runs: Sequence[ModelRun]) -> Table:
    """Rows = metric × pool, one column per model; the best model of each row in bold."""
    table = Table(title=f"embedq eval: {eval_set.source}")
    table.add_column("metric")
    table.add_column("pool")
    for run in runs:
        m = run.manifest
        header = f"{run.model_dir.name}\n{m.manifest_id}\n{m.precision} · {m.dimension}-d"
        if run.mode != "dense" or any(r.mode != "dense" for r in runs):
            header += f"\nmode {run.mode}"
        if run.reranker is not None:
            header += f"\n+ rerank {run.reranker.manifest_id}"
        table.add_column(header, justify="right")
    rows = [(name, pool) for pool in POOLS for name in METRICS if name != "cos_gap"]
    # cos_gap ranks nothing, so it is one row ("both"); its value is stored under each pool.
    for name, pool in [*rows, ("cos_gap", "test")]:
        values = [run.evaluation.metrics[pool][name] for run in runs]
        finite = [v for v in values if not math.isnan(v)]
        best = max(finite) if len(runs) > 1 and finite else None
        cells = [
            f"[bold]{_cell(v)}[/]" if best is not None and v == best else _cell(v) for v in values
        ]
        pool_label = "both" if name == "cos_gap" else pool
        table.add_row(LABELS[name], pool_label, *cells, end_section=name == "mrr@10")
    return table


def notes(eval_set: EvalSet, runs: Sequence[ModelRun]) -> list[str]:
    """Lines printed under the table: what the pools are, then per model its backend and time."""
    lines = [
        f"{len(eval_set.queries)} queries. test pool: each query ranks its own pos + neg "
        f"(≈{eval_set.mean_test_pool_size:.1f} passages); global pool: all "
        f"{len(eval_set.passages)} distinct passages of the file (the honest figure).",
        "cos pos − neg: mean cosine of a query's positives minus its negatives (no ranking).",
    ]
    lines += [
        f"{run.model_dir.name}: {run.backend}, {run.texts_embedded} texts in "
        f"{run.embed_s:.2f}s (model load {run.load_s:.2f}s), {run.truncated} truncated"
        for run in runs
        if run.mode == runs[0].mode and run.reranker is None
    ]
    lines += [
        f"+ rerank {run.reranker.manifest_id}: {run.texts_embedded} pairs in {run.embed_s:.2f}s; "
        "test pool: the reranker orders each query's pos + neg; global pool: it re-orders the "
        f"retriever's best {run.candidates.shape[1] if run.candidates is not None else 0} "
        "passages, ranked above the rest"
        for run in runs
        if run.reranker is not None
    ][:1]
    if any(run.mode != "dense" for run in runs):
        lines.append(
            f"sparse: lexical score with passages cut to their {STORED_SPARSE_TOKENS} largest "
            "weights, as stored; hybrid: reciprocal-rank fusion (k 60) of the dense and sparse "
            "rankings; cos pos − neg is then a gap of those scores."
        )
    lines += [
        f"{run.model_dir.name}: the {STORED_SPARSE_TOKENS}-token cut costs "
        f"{run.uncut['global']['recall@10'] - run.evaluation.metrics['global']['recall@10']:.3f}"
        f" recall@10 on the global pool ({run.uncut['global']['recall@10']:.3f} uncut)"
        for run in runs
        if run.uncut is not None
    ]
    return lines


def _finite(value: float) -> float | None:
    # JSON has no NaN: an undefined figure (no query with negatives) is written as null.
    return None if math.isnan(value) else round(value, 6)


def report_payload(eval_set: EvalSet, runs: Sequence[ModelRun]) -> dict[str, Any]:
    """All figures, the data set's shape and, per model, what produced them."""
    return {
        "data": {
            "source": eval_set.source,
            "queries": len(eval_set.queries),
            "passages": len(eval_set.passages),
            "mean_test_pool_size": eval_set.mean_test_pool_size,
        },
        "ties": "stable sort by descending cosine; equal scores keep file order of passages",
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "models": [
            {
                "model_dir": str(run.model_dir),
                "manifest_id": run.manifest.manifest_id,
                "source": run.manifest.source,
                "precision": run.manifest.precision,
                "dimension": run.manifest.dimension,
                "mode": run.mode,
                "reranker": None if run.reranker is None else run.reranker.manifest_id,
                "rerank_candidates": None
                if run.reranker is None or run.candidates is None
                else int(run.candidates.shape[1]),
                "backend": run.backend,
                "texts_embedded": run.texts_embedded,
                "truncated": run.truncated,
                "seconds": round(run.embed_s, 4),
                "load_seconds": round(run.load_s, 4),
                "metrics": {
                    pool: {name: _finite(run.evaluation.metrics[pool][name]) for name in METRICS}
                    for pool in POOLS
                },
                "uncut_metrics": None
                if run.uncut is None
                else {pool: {n: _finite(run.uncut[pool][n]) for n in METRICS} for pool in POOLS},
                "sparse_stored_tokens": STORED_SPARSE_TOKENS if run.mode != "dense" else None,
            }
            for run in runs
        ],
    }


def write_json(path: Path, eval_set: EvalSet, runs: Sequence[ModelRun]) -> None:
    """Write the report payload as indented UTF-8 JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = report_payload(eval_set, runs)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_plot(path: Path, runs: Sequence[ModelRun]) -> None:
    """Histograms of positive and negative cosines (labelled pairs), one subplot per model."""
    require_matplotlib()
    import matplotlib

    # Agg: no display is needed (or present on servers and in CI).
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(runs), 1, figsize=(7, 2.8 * len(runs)), squeeze=False, layout="constrained"
    )
    for ax, run in zip(axes[:, 0], runs, strict=True):
        scores = run.evaluation
        # Shared bins per model so the two histograms are comparable bar for bar; models
        # differ in score range (an anisotropic model crowds near 1), so no shared x-axis.
        both = [*scores.pos_scores.tolist(), *scores.neg_scores.tolist()]
        low, high = min(both), max(both)
        bins = [low + (high - low) * i / 40 for i in range(41)] if high > low else 40
        # density: a query has one positive and several negatives, so raw counts would hide
        # the positives' shape; dashed lines mark each mean.
        for values, label, colour in (
            (scores.neg_scores, "negatives", "tab:red"),
            (scores.pos_scores, "positives", "tab:blue"),
        ):
            if values.size:
                ax.hist(values, bins=bins, alpha=0.55, density=True, label=label, color=colour)
                ax.axvline(float(values.mean()), color=colour, linestyle="--", linewidth=1)
        ax.set_title(f"{run.model_dir.name} ({run.manifest.precision}, {run.manifest.dimension}-d)")
        ax.set_xlabel("cosine(query, passage)")
        ax.set_ylabel("density")
        ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
