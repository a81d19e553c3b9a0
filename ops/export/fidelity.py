"""How faithful one set of embeddings is to a reference set of the same texts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Fidelity:
    """Row-wise cosine against the reference and nearest-neighbour agreement."""

    mean_cos: float
    min_cos: float
    recall_at_10: float


def _unit(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: FloatArray = (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)
    return unit


def recall_at_k(reference: FloatArray, candidate: FloatArray, k: int = 10) -> float:
    """Mean share of each text's k nearest neighbours (by reference) that candidate also ranks
    in its top k, over the corpus itself (each text is a query, itself excluded); nan for one
    text."""
    ref, cand = _unit(reference), _unit(candidate)
    k = min(k, len(ref) - 1)
    if k < 1:  # one text has no neighbours to rank
        return float("nan")
    ref_sim, cand_sim = ref @ ref.T, cand @ cand.T
    np.fill_diagonal(ref_sim, -np.inf)
    np.fill_diagonal(cand_sim, -np.inf)
    ref_top = np.argpartition(-ref_sim, k, axis=1)[:, :k]
    cand_top = np.argpartition(-cand_sim, k, axis=1)[:, :k]
    hits = [len(set(a) & set(b)) for a, b in zip(ref_top, cand_top, strict=True)]
    return float(np.mean(hits) / k)


def fidelity(reference: FloatArray, candidate: FloatArray) -> Fidelity:
    """Cosine per row (mean, min) and recall@10 of candidate against reference."""
    cosines = np.sum(_unit(reference) * _unit(candidate), axis=1)
    return Fidelity(
        mean_cos=float(cosines.mean()),
        min_cos=float(cosines.min()),
        recall_at_10=recall_at_k(reference, candidate, 10),
    )
