"""Score matrices for `embedq eval --mode`: dense (cosine), sparse (lexical weights) and hybrid
(reciprocal-rank fusion of the two rankings), as the search endpoint ranks a collection.

sparse scores each passage by the inner product of its lexical weights with the query's, the
passage cut to its STORED_SPARSE_TOKENS largest weights as the store keeps it (`uncut` gives the
full weights, to measure what the cut costs). hybrid fuses full rankings over the passages,
score = 1/(RRF_K + dense rank) + 1/(RRF_K + sparse rank); the endpoint fuses each side's
top `ef_search` candidates, which ranks the same wherever both lists reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from embedq_core.sparse_vectors import SparseWeights, top_weights
from ops.evaluation.metrics import FloatArray, unit_rows

Mode = Literal["dense", "sparse", "hybrid"]
MODES: tuple[Mode, ...] = ("dense", "sparse", "hybrid")
RRF_K = 60  # the endpoint's default rrf_k


def dense_scores(queries: FloatArray, passages: FloatArray) -> FloatArray:
    """Cosine of every query with every passage."""
    scores: FloatArray = unit_rows(queries) @ unit_rows(passages).T
    return scores


def sparse_scores(
    queries: Sequence[SparseWeights], passages: Sequence[SparseWeights], uncut: bool = False
) -> FloatArray:
    """Lexical score of every query with every passage (passages cut as stored unless uncut)."""
    stored = [dict(p) if uncut else top_weights(p) for p in passages]
    column = {t: i for i, t in enumerate(sorted({t for p in stored for t in p}))}
    passage_matrix = np.zeros((len(stored), len(column)), dtype=np.float32)
    for row, weights in enumerate(stored):
        for token, weight in weights.items():
            passage_matrix[row, column[token]] = weight
    query_matrix = np.zeros((len(queries), len(column)), dtype=np.float32)
    for row, weights in enumerate(queries):
        for token, weight in weights.items():
            if token in column:  # a token no passage has scores nothing
                query_matrix[row, column[token]] = weight
    scores: FloatArray = query_matrix @ passage_matrix.T
    return scores


def _ranks(scores: FloatArray) -> FloatArray:
    """1-based rank of each passage per query row (descending score, ties in passage order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1)[None, :], axis=1)
    return ranks.astype(np.float32)


def rrf_scores(dense: FloatArray, sparse: FloatArray) -> FloatArray:
    """Reciprocal-rank fusion of two score matrices of the same shape."""
    fused: FloatArray = 1.0 / (RRF_K + _ranks(dense)) + 1.0 / (RRF_K + _ranks(sparse))
    return fused.astype(np.float32)
