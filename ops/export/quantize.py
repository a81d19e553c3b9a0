"""INT8 export with a quality gate.

Static (calibrated) QDQ quantisation of the linear layers, weights per channel: activation
scales are fixed at export, so a text's vector does not depend on what it is batched with
(dynamic quantisation computes scales per batch and does). The feed-forward output projections
stay FP32: measured on all-MiniLM-L6-v2, they carry the activation outliers that cost the most
fidelity (see the README's INT8 section). Fidelity against the FP32 export is measured on a
held-out corpus and written into the manifest; below the gate the export is refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedq_core.manifest import ModelManifest
from ops.data.corpus import calibration_texts, load_bench_corpus
from ops.export.fidelity import fidelity
from workers.engine.config import EngineConfig

log = logging.getLogger(__name__)

INT8_FILE = "model_int8.onnx"
# Feed-forward down-projections (BERT naming in optimum exports), kept in FP32.
KEEP_FP32 = re.compile(r"layer\.\d+/output/dense/")
CALIBRATION_BATCH = 16


class QualityGateFailed(RuntimeError):
    """The quantised model is not faithful enough to the FP32 export."""


@dataclass(frozen=True)
class QualityGate:
    """The bar an INT8 model must clear against its FP32 export."""

    min_mean_cos: float = 0.99
    min_recall_at_10: float = 0.90


def _weight_matmuls(onnx_path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    weights = {init.name for init in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in ("MatMul", "Gemm")
        and any(name in weights for name in node.input)
        and not KEEP_FP32.search(node.name)
    ]


def _calibration_feeds(
    model_dir: Path, max_length: int, texts: list[str]
) -> Iterator[dict[str, Any]]:
    """Batches shaped like production ones (padded, mixed lengths), so the attention-mask path
    is calibrated with padding present."""
    from workers.engine.tokenize import TextTokenizer

    tokenizer = TextTokenizer(model_dir / "tokenizer.json", max_length)
    tokenized = tokenizer.tokenize(texts)
    order = np.random.default_rng(0).permutation(len(tokenized))
    for start in range(0, len(order), CALIBRATION_BATCH):
        ids, mask, types = tokenizer.pad(
            [tokenized[i] for i in order[start : start + CALIBRATION_BATCH]]
        )
        yield {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def quantize_int8(
    out_dir: Path, fp32: ModelManifest, gate: QualityGate, engine: EngineConfig, force: bool = False
) -> ModelManifest:
    """Write out_dir/model_int8.onnx, measure it against FP32 and return its manifest. Both
    files run on ONNX Runtime's CPU provider under `engine`'s threads and batch limits, so the
    comparison is of the weights alone."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from workers.engine import Embedder
    from workers.engine.hardware import Hardware

    prepared = out_dir / "model_prepared.onnx"
    quant_pre_process(str(out_dir / fp32.onnx_file), str(prepared), skip_symbolic_shape=True)
    feeds = _calibration_feeds(out_dir, fp32.max_length, calibration_texts())
    names = {"input_ids", "attention_mask", "token_type_ids"}

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, inputs: set[str]) -> None:
            self._inputs = inputs

        def get_next(self) -> dict[str, Any] | None:
            batch = next(feeds, None)
            return None if batch is None else {k: v for k, v in batch.items() if k in self._inputs}

    import onnx

    model_inputs = {i.name for i in onnx.load(str(prepared), load_external_data=False).graph.input}
    quantize_static(
        str(prepared),
        str(out_dir / INT8_FILE),
        Reader(names & model_inputs),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
        calibrate_method=CalibrationMethod.MinMax,
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_quantize=_weight_matmuls(prepared),
    )
    prepared.unlink()

    int8 = fp32.model_copy(update={"precision": "int8", "onnx_file": INT8_FILE})
    held_out = [text for _, text in load_bench_corpus()][:500]
    plain_cpu = Hardware(cpu_has_amx_bf16=False, has_cuda_provider=False, has_openvino=False)
    on_cpu = replace(engine, runtime="onnxruntime-cpu")
    reference = Embedder.from_model_dir(out_dir, on_cpu, hardware=plain_cpu, manifest=fp32)
    quantised = Embedder.from_model_dir(out_dir, on_cpu, hardware=plain_cpu, manifest=int8)
    measured = fidelity(reference.embed(held_out).vectors, quantised.embed(held_out).vectors)
    quality = {
        "mean_cos_vs_fp32": round(measured.mean_cos, 5),
        "min_cos_vs_fp32": round(measured.min_cos, 5),
        "recall_at_10_vs_fp32": round(measured.recall_at_10, 4),
        "held_out_texts": float(len(held_out)),
    }
    log.info("int8 fidelity vs fp32 on %d held-out texts: %s", len(held_out), quality)
    passed = (
        measured.mean_cos >= gate.min_mean_cos and measured.recall_at_10 >= gate.min_recall_at_10
    )
    if not passed and not force:
        (out_dir / INT8_FILE).unlink()
        fp32.write(out_dir)  # the directory stays a usable FP32 export
        raise QualityGateFailed(
            f"INT8 below the gate (mean cos {measured.mean_cos:.4f} < {gate.min_mean_cos} or "
            f"recall@10 {measured.recall_at_10:.3f} < {gate.min_recall_at_10}); kept FP32 only. "
            "Use --force to keep it anyway."
        )
    return int8.model_copy(update={"quality": quality})
