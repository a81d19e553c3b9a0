"""Embedding an eval set with the workers' own engine, one model after another, with progress."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from embedq_core.sparse_vectors import SparseWeights
from ops.evaluation.dataset import EvalSet
from ops.evaluation.metrics import (
    BLOCK_ROWS,
    Evaluation,
    FloatArray,
    IntArray,
    evaluate,
    evaluate_matrix,
    unit_rows,
)
from ops.evaluation.modes import Mode, dense_scores, rrf_scores, sparse_scores
from ops.evaluation.rerank import rerank_evaluation, top_candidates
from workers.engine import Embedder, EngineConfig, Reranker
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
    mode: Mode = "dense"
    # sparse mode: the figures with every passage's full weights, against the stored cut.
    uncut: dict[str, dict[str, float]] | None = None
    # With a reranker: each query line's best passages by this run's ranking (for the
    # reranker to re-order), and on the reranked run, the reranker that did it.
    candidates: IntArray | None = None
    reranker: ModelManifest | None = None


def _embed(
    embedder: Embedder, texts: list[str], input_type: InputType, progress: Progress, task: TaskID
) -> tuple[FloatArray, list[SparseWeights], int]:
    """Vectors (and lexical weights, empty for a dense model) for texts in order, and how many
    were truncated at the model's token limit."""
    vectors = np.empty((len(texts), embedder.manifest.dimension), dtype=np.float32)
    sparse: list[SparseWeights] = []
    truncated = 0
    for start in range(0, len(texts), CHUNK_TEXTS):
        result = embedder.embed(texts[start : start + CHUNK_TEXTS], input_type=input_type)
        vectors[start : start + len(result.vectors)] = result.vectors
        sparse += result.sparse or []
        truncated += sum(result.truncated)
        progress.advance(task, len(result.vectors))
    return vectors, sparse, truncated


def run_model(
    eval_set: EvalSet,
    model_dir: Path,
    engine: EngineConfig,
    progress: Progress,
    modes: Sequence[Mode] = ("dense",),
    candidates: int = 0,
) -> list[ModelRun]:
    """Embed the set's distinct queries (as queries: the manifest's instruction applies) and
    distinct passages (as passages) with one exported model once, then score both pools in
    each mode (sparse and hybrid need a model with a sparse head)."""
    started = time.perf_counter()
    embedder = Embedder.from_model_dir(model_dir, engine)
    load_s = time.perf_counter() - started
    # A query text repeated on several lines is embedded once, like a repeated passage.
    distinct_queries = list(dict.fromkeys(eval_set.queries))
    task = progress.add_task(model_dir.name, total=len(distinct_queries) + len(eval_set.passages))
    started = time.perf_counter()
    query_vectors, query_sparse, query_truncated = _embed(
        embedder, distinct_queries, "query", progress, task
    )
    passage_vectors, passage_sparse, passage_truncated = _embed(
        embedder, eval_set.passages, "passage", progress, task
    )
    embed_s = time.perf_counter() - started
    row_of = {text: row for row, text in enumerate(distinct_queries)}
    lines = [row_of[q] for q in eval_set.queries]
    per_line = query_vectors[lines]
    pos, neg = eval_set.pos_ids, eval_set.neg_ids
    runs = []
    for mode in modes:
        uncut = None
        top = None
        if mode == "dense":
            evaluation = evaluate(per_line, passage_vectors, pos, neg)
            if candidates:
                top = _dense_top(per_line, passage_vectors, candidates)
        else:
            line_sparse = [query_sparse[i] for i in lines]
            lexical = sparse_scores(line_sparse, passage_sparse)
            if mode == "sparse":
                evaluation = evaluate_matrix(lexical, pos, neg)
                full = sparse_scores(line_sparse, passage_sparse, uncut=True)
                uncut = evaluate_matrix(full, pos, neg).metrics
                ranked = lexical
            else:
                ranked = rrf_scores(dense_scores(per_line, passage_vectors), lexical)
                evaluation = evaluate_matrix(ranked, pos, neg)
            if candidates:
                top = top_candidates(ranked, candidates)
        runs.append(
            ModelRun(
                model_dir=model_dir,
                manifest=embedder.manifest,
                backend=embedder.backend,
                texts_embedded=len(distinct_queries) + len(eval_set.passages),
                truncated=query_truncated + passage_truncated,
                load_s=load_s,
                embed_s=embed_s,
                evaluation=evaluation,
                mode=mode,
                uncut=uncut,
                candidates=top,
            )
        )
    return runs


def _dense_top(queries: FloatArray, passages: FloatArray, count: int) -> IntArray:
    """Each query line's best passages by cosine, a block of lines at a time."""
    unit_queries, unit_passages = unit_rows(queries), unit_rows(passages)
    blocks = [
        top_candidates(unit_queries[start : start + BLOCK_ROWS] @ unit_passages.T, count)
        for start in range(0, len(unit_queries), BLOCK_ROWS)
    ]
    return np.concatenate(blocks) if blocks else np.zeros((0, count), dtype=np.int64)


def with_reranker(
    eval_set: EvalSet, runs: Sequence[ModelRun], reranker: Reranker, progress: Progress
) -> list[ModelRun]:
    """Each run followed by the same run with its candidates re-ordered by the reranker."""
    out: list[ModelRun] = []
    for run in runs:
        out.append(run)
        assert run.candidates is not None, "run the models with candidates to rerank"
        evaluation, seconds, pairs = rerank_evaluation(eval_set, run.candidates, reranker, progress)
        out.append(
            replace(
                run,
                evaluation=evaluation,
                embed_s=seconds,
                texts_embedded=pairs,
                truncated=0,
                uncut=None,
                reranker=reranker.manifest,
            )
        )
    return out


def run_models(
    eval_set: EvalSet,
    model_dirs: Sequence[Path],
    engine: EngineConfig,
    console: Console,
    modes: Sequence[Mode] = ("dense",),
    reranker_dir: Path | None = None,
    candidates: int = 20,
) -> list[ModelRun]:
    """Every model on the set in every mode, in the order given, one progress bar per model on
    `console` (rich draws live bars only on a terminal, and prints the final state once
    otherwise); with a reranker, each run is followed by its reranked twin."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    pool = candidates if reranker_dir is not None else 0
    with Progress(*columns, console=console) as progress:
        runs = [
            run
            for model_dir in model_dirs
            for run in run_model(eval_set, model_dir, engine, progress, modes, pool)
        ]
        if reranker_dir is None:
            return runs
        return with_reranker(
            eval_set, runs, Reranker.from_model_dir(reranker_dir, engine), progress
        )
