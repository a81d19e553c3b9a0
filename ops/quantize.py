"""INT8 quantisation of an exported model, with its fidelity against FP32 measured and recorded."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from embedq_core.manifest import ModelManifest
from ops.corpus import load_demo_corpus

log = logging.getLogger(__name__)

INT8_FILE = "model_int8.onnx"


def quantize_int8(out_dir: Path, fp32: ModelManifest) -> ModelManifest:
    """Quantise weights to INT8 per channel and measure cosine vs FP32 on the bundled corpus."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from workers.engine import Embedder
    from workers.engine.pooling import l2_normalize

    quantize_dynamic(
        out_dir / fp32.onnx_file,
        out_dir / INT8_FILE,
        per_channel=True,
        weight_type=QuantType.QInt8,
    )
    int8 = fp32.model_copy(update={"precision": "int8", "onnx_file": INT8_FILE})
    texts = [text for _, text in load_demo_corpus()]
    fp32.write(out_dir)
    reference = l2_normalize(Embedder.from_model_dir(out_dir).embed(texts).vectors)
    int8.write(out_dir)
    quantised = l2_normalize(Embedder.from_model_dir(out_dir).embed(texts).vectors)
    cosines = np.sum(reference * quantised, axis=1)
    quality = {"mean_cos_vs_fp32": float(cosines.mean()), "min_cos_vs_fp32": float(cosines.min())}
    log.info("int8 fidelity vs fp32 on %d texts: %s", len(texts), quality)
    return int8.model_copy(update={"quality": quality})
