"""Retrieval metrics on two pools, from vectors or a score matrix: pure numpy, no I/O.

Pools:
- test pool: each query ranks only its own labelled passages (its pos + neg);
- global pool: each query ranks every distinct passage of the file, so another query's
  passages compete too. It is the harder and more honest figure.

Definitions (FlagEmbedding's): recall@k = |relevant ∩ top-k| / |relevant|, averaged over
queries; MRR@k = 1 / rank of the first relevant passage if it is within the top k, else 0;
cos_gap = per query, mean cosine of its positives minus mean cosine of its negatives, averaged
over the queries that have negatives (identical for both pools: it does not rank anything).

Ties are ranked deterministically: a stable sort by descending score, equal scores keeping
the passages' order of first appearance in the file. A positive listed before its negatives
therefore wins an exact tie; exact float ties are rare with real models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

RECALL_KS = (1, 5, 10)
MRR_KS = (1, 10)
METRICS = (*(f"recall@{k}" for k in RECALL_KS), *(f"mrr@{k}" for k in MRR_KS), "cos_gap")
POOLS = ("test", "global")
# Rows of the score matrix handled at once: bounds memory at block × passages floats.
BLOCK_ROWS = 512


@dataclass(frozen=True)
class Evaluation:
    """Metrics per pool, and the labelled cosines (query × its pos, query × its neg) behind them."""

    metrics: dict[str, dict[str, float]]
    pos_scores: FloatArray
    neg_scores: FloatArray


def unit_rows(vectors: FloatArray) -> FloatArray:
    """Rows scaled to unit length, so that dot products are cosines whatever the manifest's
    normalisation; a zero row stays zero (cosine 0 with everything rather than NaN)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    scaled: FloatArray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return scaled


def rank(scores: FloatArray, candidates: IntArray) -> IntArray:
    """Candidate passage ids, best first: descending score, ties in passage (file) order."""
    ordered = np.sort(candidates)
    ranked: IntArray = ordered[np.argsort(-scores[ordered], kind="stable")]
    return ranked


def ranking_metrics(ranked: IntArray, relevant: list[int]) -> dict[str, float]:
    """recall@k and MRR@k of one ranked list against the query's relevant passage ids."""
    hits = np.isin(ranked[: max(*RECALL_KS, *MRR_KS)], relevant)
    out = {f"recall@{k}": float(hits[:k].sum()) / len(relevant) for k in RECALL_KS}
    first = np.flatnonzero(hits)
    for k in MRR_KS:
        out[f"mrr@{k}"] = 1.0 / (int(first[0]) + 1) if first.size and first[0] < k else 0.0
    return out


def _per_query(
    scores: FloatArray, pos_ids: list[list[int]], neg_ids: list[list[int]]
) -> dict[str, dict[str, list[float]]]:
    """Each query's figures (row i of scores is query i), not yet averaged."""
    per: dict[str, dict[str, list[float]]] = {p: {m: [] for m in METRICS} for p in POOLS}
    every_passage = np.arange(scores.shape[1], dtype=np.int64)
    for row, pos, neg in zip(scores, pos_ids, neg_ids, strict=True):
        own = np.asarray(pos + neg, dtype=np.int64)
        for pool, candidates in (("test", own), ("global", every_passage)):
            for name, value in ranking_metrics(rank(row, candidates), pos).items():
                per[pool][name].append(value)
        if neg:
            gap = float(row[pos].mean()) - float(row[neg].mean())
            for pool in POOLS:
                per[pool]["cos_gap"].append(gap)
    return per


def _average(per: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    # No query with negatives leaves cos_gap undefined: NaN, shown as n/a and null in JSON.
    return {
        pool: {m: float(np.mean(v)) if v else float("nan") for m, v in figures.items()}
        for pool, figures in per.items()
    }


def evaluate_scores(
    scores: FloatArray, pos_ids: list[list[int]], neg_ids: list[list[int]]
) -> dict[str, dict[str, float]]:
    """Every metric on both pools from a full query × passage score matrix."""
    return _average(_per_query(scores, pos_ids, neg_ids))


def evaluate(
    query_vectors: FloatArray,
    passage_vectors: FloatArray,
    pos_ids: list[list[int]],
    neg_ids: list[list[int]],
) -> Evaluation:
    """Every metric on both pools from vectors (one row per query line, one per distinct
    passage), scored by explicit cosine, a block of queries at a time."""
    queries, passages = unit_rows(query_vectors), unit_rows(passage_vectors)
    per: dict[str, dict[str, list[float]]] = {p: {m: [] for m in METRICS} for p in POOLS}
    pos_scores: list[FloatArray] = []
    neg_scores: list[FloatArray] = []
    for start in range(0, len(queries), BLOCK_ROWS):
        stop = start + BLOCK_ROWS
        scores = queries[start:stop] @ passages.T
        block = _per_query(scores, pos_ids[start:stop], neg_ids[start:stop])
        for pool in POOLS:
            for name in METRICS:
                per[pool][name].extend(block[pool][name])
        for row, pos, neg in zip(scores, pos_ids[start:stop], neg_ids[start:stop], strict=True):
            pos_scores.append(row[pos])
            neg_scores.append(row[neg])
    return Evaluation(
        metrics=_average(per),
        pos_scores=np.concatenate(pos_scores).astype(np.float32),
        neg_scores=np.concatenate(neg_scores).astype(np.float32),
    )


def evaluate_matrix(
    scores: FloatArray, pos_ids: list[list[int]], neg_ids: list[list[int]]
) -> Evaluation:
    """Every metric on both pools from a full score matrix (sparse and hybrid modes), with the
    labelled scores behind them."""
    return Evaluation(
        metrics=evaluate_scores(scores, pos_ids, neg_ids),
        pos_scores=np.concatenate([row[p] for row, p in zip(scores, pos_ids, strict=True)]).astype(
            np.float32
        ),
        neg_scores=np.concatenate(
            [row[n] for row, n in zip(scores, neg_ids, strict=True)] or [np.zeros(0)]
        ).astype(np.float32),
    )
