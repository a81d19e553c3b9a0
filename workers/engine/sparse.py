"""Lexical (sparse) weights from a BGE-M3-style head, pooled the way FlagEmbedding pools them.

The graph gives one weight per token position (relu of a linear layer over the token's hidden
state). A text's sparse vector keeps, per token id, the largest weight any of its positions
got; special tokens (cls, eos, pad, unk) and zero weights are dropped.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
SparseWeights = dict[int, float]


def lexical_weights(
    input_ids: IntArray, attention_mask: IntArray, token_weights: FloatArray, dropped: IntArray
) -> list[SparseWeights]:
    """Per row of a padded batch, {token id: max weight}; padding positions never count."""
    out: list[SparseWeights] = []
    for ids, mask, weights in zip(input_ids, attention_mask, token_weights, strict=True):
        keep = (mask > 0) & (weights > 0) & ~np.isin(ids, dropped)
        ids_kept, weights_kept = ids[keep], weights[keep].astype(np.float32)
        if ids_kept.size == 0:
            out.append({})
            continue
        order = np.argsort(ids_kept, kind="stable")
        ids_sorted, weights_sorted = ids_kept[order], weights_kept[order]
        starts = np.flatnonzero(np.r_[True, ids_sorted[1:] != ids_sorted[:-1]])
        maxima = np.maximum.reduceat(weights_sorted, starts)
        out.append(dict(zip(ids_sorted[starts].tolist(), maxima.tolist(), strict=True)))
    return out


def dropped_ids(token_ids: Collection[int]) -> IntArray:
    """The dropped special token ids as an array for np.isin."""
    return np.asarray(sorted(token_ids), dtype=np.int64)
