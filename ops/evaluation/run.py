"""Embedding an eval set with the workers' own engine, one model after another, with progress."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from embedq_core.manifest import ModelManifest
from ops.evaluation.dataset import EvalSet
from ops.evaluation.metrics import Evaluation, FloatArray, evaluate
from workers.engine import Embedder, EngineConfig
from workers.engine.embedder import InputType

# Texts handed to the engine per call: large enough for its length-sorted batching to pay,
# small enough for the progress bar to move.
CHUNK_TEXTS = 256


@dataclass(frozen=True)
class ModelRun:
    """One model's results on the eval set, with what is needed to reproduce and compare it."""

    model_dir: Path
    manifest: ModelManifest
    backend: str
    texts_embedded: int
    truncated: int
    load_s: float
    embed_s: float
    evaluation: Evaluation


def _embed(
    embedder: Embedder, texts: list[str], input_type: InputType, progress: Progress, task: TaskID
) -> tuple[FloatArray, int]:
    """Vectors for texts in order, and how many were truncated at the model's token limit."""
    vectors = np.empty((len(texts), embedder.manifest.dimension), dtype=np.float32)
    truncated = 0
    for start in range(0, len(texts), CHUNK_TEXTS):
        result = embedder.embed(texts[start : start + CHUNK_TEXTS], input_type=input_type)
        vectors[start : start + len(result.vectors)] = result.vectors
        truncated += sum(result.truncated)
        progress.advance(task, len(result.vectors))
    return vectors, truncated


def run_model(
    eval_set: EvalSet, model_dir: Path, engine: EngineConfig, progress: Progress
) -> ModelRun:
    """Embed the set's distinct queries (as queries: the manifest's instruction applies) and
    distinct passages (as passages) with one exported model, then score both pools."""
    started = time.perf_counter()
    embedder = Embedder.from_model_dir(model_dir, engine)
    load_s = time.perf_counter() - started
    # A query text repeated on several lines is embedded once, like a repeated passage.
    distinct_queries = list(dict.fromkeys(eval_set.queries))
    task = progress.add_task(model_dir.name, total=len(distinct_queries) + len(eval_set.passages))
    started = time.perf_counter()
    query_vectors, query_truncated = _embed(embedder, distinct_queries, "query", progress, task)
    passage_vectors, passage_truncated = _embed(
        embedder, eval_set.passages, "passage", progress, task
    )
    embed_s = time.perf_counter() - started
    row_of = {text: row for row, text in enumerate(distinct_queries)}
    per_line = query_vectors[[row_of[q] for q in eval_set.queries]]
    return ModelRun(
        model_dir=model_dir,
        manifest=embedder.manifest,
        backend=embedder.backend,
        texts_embedded=len(distinct_queries) + len(eval_set.passages),
        truncated=query_truncated + passage_truncated,
        load_s=load_s,
        embed_s=embed_s,
        evaluation=evaluate(per_line, passage_vectors, eval_set.pos_ids, eval_set.neg_ids),
    )


def run_models(
    eval_set: EvalSet, model_dirs: Sequence[Path], engine: EngineConfig, console: Console
) -> list[ModelRun]:
    """Every model on the set, in the order given, one progress bar each on `console`
    (rich draws live bars only on a terminal, and prints the final state once otherwise)."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        return [run_model(eval_set, model_dir, engine, progress) for model_dir in model_dirs]
