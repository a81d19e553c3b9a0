"""INT8 export for OpenVINO: static post-training quantisation with NNCF, behind the same
quality gate as the ONNX Runtime INT8 export (ops/export/quantize.py).

NNCF's transformer preset with SmoothQuant (alpha below) moves activation outliers into the
weights, scales are calibrated once on padded, production-shaped batches, and the layers that
cost the most fidelity stay in floating point (`keep_float`: the feed-forward down-projections,
which the ONNX Runtime INT8 export measured as the costliest on all-MiniLM-L6-v2, README's
INT8 section; alpha and the kept layers were not swept for this OpenVINO path). Static scales
make a text's vector independent of its batch. The result is an OpenVINO IR
(`model_int8_ov.xml` + `.bin`) that only OpenVINO runs: on VNNI (AVX-512 or AMX) CPUs its INT8
kernels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedq_core.manifest import ModelManifest
from ops.data.corpus import calibration_texts, load_bench_corpus, load_bench_passages
from ops.export.fidelity import fidelity
from ops.export.quantize import QualityGate, QualityGateFailed
from workers.engine.config import EngineConfig

log = logging.getLogger(__name__)

OV_INT8_FILE = "model_int8_ov.xml"
CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class Int8Recipe:
    """The NNCF settings; the export's gate measures whatever they give (README)."""

    smooth_quant_alpha: float = 0.95
    # Node-name patterns kept in floating point (regular expressions over OpenVINO node names,
    # BERT naming of optimum exports): the feed-forward down-projections, whose inputs carry
    # the activation outliers (GELU output) that INT8 loses the most on.
    keep_float: tuple[str, ...] = (r".*layer\.\d+/output/dense/MatMul",)


def held_out_texts() -> list[str]:
    """What the gate measures on: the first 500 bench-corpus texts and 200 passages, none of
    which calibration sees."""
    return [t for _, t in load_bench_corpus()][:500] + [t for _, t in load_bench_passages(200)]


def _calibration_batches(
    model_dir: Path, max_length: int, inputs: set[str]
) -> list[dict[str, Any]]:
    """Padded batches of mixed lengths, shaped like production ones, so the attention-mask
    path is calibrated with padding present; the demo sentences alone and joined up to
    passage length (none of them is in the held-out texts)."""
    from workers.engine.tokenize import TextTokenizer

    texts = calibration_texts()
    even = texts[: len(texts) // 2]
    texts += [" ".join(even[i : i + 12]) for i in range(0, len(even) - 11, 6)]
    tokenizer = TextTokenizer(model_dir / "tokenizer.json", max_length)
    tokenized = tokenizer.tokenize(texts)
    order = np.random.default_rng(0).permutation(len(tokenized))
    batches = []
    for start in range(0, len(order), CALIBRATION_BATCH):
        batch = [tokenized[i] for i in order[start : start + CALIBRATION_BATCH]]
        ids, mask, types = tokenizer.pad(batch)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        batches.append({k: v for k, v in feeds.items() if k in inputs})
    return batches


def write_int8_ir(
    out_dir: Path,
    fp32: ModelManifest,
    recipe: Int8Recipe,
    calibration: Callable[[set[str]], list[dict[str, Any]]],
) -> ModelManifest:
    """Quantise out_dir's FP32 graph with NNCF (the recipe), calibrated on the padded batches
    `calibration` makes for the graph's input names; write the IR and return its manifest
    (not yet measured)."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(out_dir / fp32.onnx_file))
    batches = calibration({port.get_any_name() for port in model.inputs})
    quantized = nncf.quantize(
        model,
        nncf.Dataset(batches),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(batches),
        ignored_scope=nncf.IgnoredScope(patterns=list(recipe.keep_float), validate=False),
        advanced_parameters=nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=recipe.smooth_quant_alpha)
        ),
    )
    ov.save_model(quantized, str(out_dir / OV_INT8_FILE))
    return fp32.model_copy(update={"precision": "int8-openvino", "onnx_file": OV_INT8_FILE})


def discard_int8_ir(out_dir: Path, fp32: ModelManifest) -> None:
    """Remove the INT8 IR after a failed gate: the directory stays a usable FP32 export."""
    for path in (out_dir / OV_INT8_FILE, (out_dir / OV_INT8_FILE).with_suffix(".bin")):
        path.unlink()
    fp32.write(out_dir)


def quantize_int8_openvino(
    out_dir: Path,
    fp32: ModelManifest,
    gate: QualityGate,
    engine: EngineConfig,
    force: bool = False,
    recipe: Int8Recipe = Int8Recipe(),
) -> ModelManifest:
    """Write out_dir/model_int8_ov.xml, measure it against the FP32 export (ONNX Runtime FP32)
    on held-out texts under `engine`'s threads and batch limits, and return its manifest. The
    INT8 model runs as a worker here would run it (float layers in BF16 on a BF16 CPU)."""
    from workers.engine import Embedder

    int8 = write_int8_ir(
        out_dir,
        fp32,
        recipe,
        lambda inputs: _calibration_batches(out_dir, fp32.max_length, inputs),
    )
    texts = held_out_texts()
    # The reference is plain FP32 (ONNX Runtime), not an execution precision of it.
    on_cpu = replace(engine, runtime="onnxruntime-cpu")
    reference = Embedder.from_model_dir(out_dir, on_cpu, manifest=fp32)
    candidate = Embedder.from_model_dir(out_dir, replace(engine, runtime="openvino"), manifest=int8)
    measured = fidelity(reference.embed(texts).vectors, candidate.embed(texts).vectors)
    quality = {
        "mean_cos_vs_fp32": round(measured.mean_cos, 5),
        "min_cos_vs_fp32": round(measured.min_cos, 5),
        "recall_at_10_vs_fp32": round(measured.recall_at_10, 4),
        "held_out_texts": float(len(texts)),
        "smooth_quant_alpha": recipe.smooth_quant_alpha,
    }
    log.info("openvino int8 fidelity vs fp32 on %d held-out texts: %s", len(texts), quality)
    passed = (
        measured.mean_cos >= gate.min_mean_cos and measured.recall_at_10 >= gate.min_recall_at_10
    )
    if not passed and not force:
        discard_int8_ir(out_dir, fp32)
        raise QualityGateFailed(
            f"INT8 below the gate (mean cos {measured.mean_cos:.4f} < {gate.min_mean_cos} or "
            f"recall@10 {measured.recall_at_10:.3f} < {gate.min_recall_at_10}); kept FP32 only. "
            "Use --force to keep it anyway."
        )
    return int8.model_copy(update={"quality": quality})
