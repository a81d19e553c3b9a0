"""INT8 for rerankers: the OpenVINO INT8 recipe of embedders (NNCF, SmoothQuant, the
feed-forward down-projections kept in floating point), calibrated on padded query-passage
pairs and gated on what a reranker is for: the order of passages and their relevance scores.

The gate measures, on held-out queries each against the same held-out passages, the share of
passage pairs each query orders the same way as FP32 (pairwise agreement: (1 + Kendall's tau)/2)
and the mean absolute error of the relevance scores (sigmoid of the logit, in 0..1, so the
error means the same whatever the model's logit scale).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedq_core.manifest import ModelManifest
from embedq_core.query_protocol import relevance
from ops.data.corpus import calibration_texts, load_bench_corpus, load_bench_passages
from ops.export.quantize import QualityGateFailed
from ops.export.quantize_openvino import (
    CALIBRATION_BATCH,
    Int8Recipe,
    discard_int8_ir,
    write_int8_ir,
)
from workers.engine.config import EngineConfig

log = logging.getLogger(__name__)

HELD_OUT_QUERIES = 24
HELD_OUT_PASSAGES = 24
RECIPE = Int8Recipe()


@dataclass(frozen=True)
class RerankGate:
    """The bar an INT8 reranker must clear against its FP32 export."""

    min_pair_agreement: float = 0.95
    max_score_error: float = 0.02


def _calibration_batches(
    model_dir: Path, max_length: int, inputs: set[str]
) -> list[dict[str, Any]]:
    """Padded batches of pairs: demo sentences as queries against sentences and joined
    passages (none of them held out)."""
    from workers.engine.pair_tokenize import PairTokenizer
    from workers.engine.tokenize import pad_batch

    texts = calibration_texts()
    passages = texts[1::2] + [" ".join(texts[i : i + 10]) for i in range(0, len(texts) - 9, 10)]
    tokenizer = PairTokenizer(model_dir / "tokenizer.json", max_length)
    pairs = [
        pair
        for query in texts[0:40:2]
        for pair in tokenizer.encode(query, passages[: CALIBRATION_BATCH // 2])
    ]
    order = np.random.default_rng(0).permutation(len(pairs))
    batches = []
    for start in range(0, len(order), CALIBRATION_BATCH):
        ids, mask, types = pad_batch(
            [pairs[i] for i in order[start : start + CALIBRATION_BATCH]], tokenizer.pad_id
        )
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        batches.append({k: v for k, v in feeds.items() if k in inputs})
    return batches


def pair_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The share of passage pairs that candidate orders as reference does (ties count half)."""
    i, j = np.triu_indices(len(reference), k=1)
    ref = np.sign(reference[i] - reference[j])
    cand = np.sign(candidate[i] - candidate[j])
    return float(np.mean(np.where(ref == cand, 1.0, np.where((ref == 0) | (cand == 0), 0.5, 0.0))))


def quantize_reranker_int8(
    out_dir: Path,
    fp32: ModelManifest,
    gate: RerankGate,
    engine: EngineConfig,
    force: bool = False,
    recipe: Int8Recipe = RECIPE,
) -> ModelManifest:
    """Write out_dir/model_int8_ov.xml, measure it against the FP32 export on ONNX Runtime on
    held-out pairs, and return its manifest; below the gate the directory stays FP32 only."""
    from workers.engine import Reranker

    int8 = write_int8_ir(
        out_dir,
        fp32,
        recipe,
        lambda inputs: _calibration_batches(out_dir, fp32.max_length, inputs),
    )
    reference = Reranker.from_model_dir(
        out_dir, replace(engine, runtime="onnxruntime-cpu"), manifest=fp32
    )
    candidate = Reranker.from_model_dir(out_dir, replace(engine, runtime="openvino"), manifest=int8)
    queries = [t for _, t in load_bench_corpus()][:HELD_OUT_QUERIES]
    passages = [t for _, t in load_bench_passages(HELD_OUT_PASSAGES)]
    agreements, errors = [], []
    for query in queries:
        expected = reference.score(query, passages).logits
        measured = candidate.score(query, passages).logits
        agreements.append(pair_agreement(expected, measured))
        errors.append(float(np.mean(np.abs(relevance(expected, True) - relevance(measured, True)))))
    agreement, error = float(np.mean(agreements)), float(np.mean(errors))
    quality = {
        "pair_agreement_vs_fp32": round(agreement, 5),
        "mean_score_error_vs_fp32": round(error, 5),
        "held_out_pairs": float(len(queries) * len(passages)),
        "smooth_quant_alpha": recipe.smooth_quant_alpha,
    }
    log.info(
        "reranker int8 fidelity vs fp32 on %d held-out pairs: %s",
        len(queries) * len(passages),
        quality,
    )
    if (agreement < gate.min_pair_agreement or error > gate.max_score_error) and not force:
        discard_int8_ir(out_dir, fp32)
        raise QualityGateFailed(
            f"INT8 reranker below the gate (pair agreement {agreement:.4f} < "
            f"{gate.min_pair_agreement} or score error {error:.4f} > {gate.max_score_error}); "
            "kept FP32 only. Use --force to keep it anyway."
        )
    return int8.model_copy(update={"quality": quality})
