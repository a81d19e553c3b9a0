"""Pooling and normalisation, as the manifest names them."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def pool(
    hidden: FloatArray, attention_mask: npt.NDArray[np.int64], pooling: Literal["cls", "mean"]
) -> FloatArray:
    """Reduce (batch, seq, dim) token states to (batch, dim) sentence vectors."""
    if pooling == "cls":
        return np.ascontiguousarray(hidden[:, 0, :], dtype=np.float32)
    mask = attention_mask[:, :, None].astype(np.float32)
    summed = (hidden.astype(np.float32) * mask).sum(axis=1)
    # Same floor as sentence-transformers, so an all-padding row cannot divide by zero.
    counts = np.clip(mask.sum(axis=1), 1e-9, None)
    pooled: FloatArray = (summed / counts).astype(np.float32)
    return pooled


def l2_normalize(vectors: FloatArray) -> FloatArray:
    """Scale each row to unit length (rows of zeros stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: FloatArray = (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)
    return unit
