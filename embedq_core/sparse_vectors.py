"""Sparse (lexical) vectors in pgvector: which weights are stored, and pgvector's text form.

A BGE-M3-style model gives each text {token id: weight}; pgvector stores it as a `sparsevec`
whose dimension is the model's vocabulary size, token id t at (0-based) index t. Its text form
counts from 1: '{t+1:w,...}/dim'.
"""

from __future__ import annotations

from collections.abc import Mapping

SPARSE_COLUMN = "sparse_embedding"
# pgvector's HNSW index takes sparsevec rows of up to 1,000 non-zeros. A row keeps its 256
# largest weights: every text up to ~256 distinct tokens is stored whole (a 512-token passage
# rarely has more), and a row stays about 2 KiB (8 bytes a non-zero), under Postgres's TOAST
# threshold. What the cut costs in recall is measured by `embedq eval` (mode sparse, full
# weights against the stored cut) and reported in the README.
STORED_SPARSE_TOKENS = 256

SparseWeights = dict[int, float]


def top_weights(weights: Mapping[int, float], limit: int = STORED_SPARSE_TOKENS) -> SparseWeights:
    """The `limit` largest weights (equal weights: the lower token id first)."""
    if len(weights) <= limit:
        return dict(weights)
    return dict(sorted(weights.items(), key=lambda item: (-item[1], item[0]))[:limit])


def sparsevec_literal(weights: Mapping[int, float], dimension: int) -> str:
    """pgvector's text form of weights; repr of each weight reads back exactly."""
    for token in weights:
        if not 0 <= token < dimension:
            raise ValueError(f"token id {token} outside the vocabulary (size {dimension})")
    body = ",".join(f"{token + 1}:{float(w)!r}" for token, w in sorted(weights.items()))
    return f"{{{body}}}/{dimension}"
