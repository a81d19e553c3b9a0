"""A retriever's rankings re-scored by a reranker, on both pools of an eval set.

Test pool: the reranker orders each query's own positives and negatives. Global pool: the
retriever's best `candidates` passages of the whole file are re-ordered by the reranker and
ranked above the rest (the two-stage search `rerank` performs), so the figures say what the
reranker adds on the user's own labelled pairs.
"""

from __future__ import annotations

import time

import numpy as np
from rich.progress import Progress

from ops.evaluation.dataset import EvalSet
from ops.evaluation.metrics import Evaluation, FloatArray, IntArray, evaluate_matrix
from workers.engine import Reranker

# Above any reranker score: candidates rank before the passages the retriever left out.
CANDIDATE_LIFT = 1e6
LEFT_OUT = -1e9


def top_candidates(scores: FloatArray, count: int) -> IntArray:
    """Each row's `count` best passage ids (any order), from a block of retriever scores."""
    count = min(count, scores.shape[1])
    best: IntArray = np.argpartition(-scores, count - 1, axis=1)[:, :count].astype(np.int64)
    return best


def rerank_evaluation(
    eval_set: EvalSet,
    candidates: IntArray,
    reranker: Reranker,
    progress: Progress,
) -> tuple[Evaluation, float, int]:
    """Metrics with the reranker's scores, the seconds it took and the pairs it scored."""
    lines = len(eval_set.queries)
    passages = len(eval_set.passages)
    test = np.full((lines, passages), LEFT_OUT, dtype=np.float32)
    global_pool = np.full((lines, passages), LEFT_OUT, dtype=np.float32)
    task = progress.add_task(f"rerank: {reranker.manifest.manifest_id}", total=lines)
    started = time.perf_counter()
    pairs = 0
    for line, query in enumerate(eval_set.queries):
        own = [*eval_set.pos_ids[line], *eval_set.neg_ids[line]]
        chosen = [int(i) for i in candidates[line]]
        ids = list(dict.fromkeys([*own, *chosen]))
        scores = reranker.score(query, [eval_set.passages[i] for i in ids]).logits
        pairs += len(ids)
        by_id = dict(zip(ids, scores.tolist(), strict=True))
        test[line, own] = [by_id[i] for i in own]
        global_pool[line, chosen] = [CANDIDATE_LIFT + by_id[i] for i in chosen]
        progress.advance(task)
    seconds = time.perf_counter() - started
    on_test = evaluate_matrix(test, eval_set.pos_ids, eval_set.neg_ids)
    on_global = evaluate_matrix(global_pool, eval_set.pos_ids, eval_set.neg_ids)
    evaluation = Evaluation(
        metrics={"test": on_test.metrics["test"], "global": on_global.metrics["global"]},
        pos_scores=on_test.pos_scores,
        neg_scores=on_test.neg_scores,
    )
    return evaluation, seconds, pairs
