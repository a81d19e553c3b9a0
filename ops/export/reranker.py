"""Cross-encoder (reranker) export: a sequence-classification checkpoint with one label, such
as BAAI/bge-reranker-v2-m3 (XLM-RoBERTa) or bge-reranker-base/large (BERT-shaped), to one ONNX
graph that takes a pair's encoding and gives its relevance logit."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from embedq_core.manifest import ModelManifest
from ops.export.model_config import FAST_TOKENIZER_FILE

log = logging.getLogger(__name__)

LOGITS_OUTPUT = "logits"
# XLM-R counts positions from the padding id + 1: 8,194 positions hold 8,192 tokens.
POSITION_OFFSET = {"xlm-roberta": 2, "roberta": 2}


def _config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def is_reranker(model_dir: Path) -> bool:
    """A sequence-classification checkpoint with a single label: a cross-encoder's score."""
    config = _config(model_dir)
    architectures = [str(a) for a in config.get("architectures") or []]
    labels = config.get("num_labels") or len(config.get("id2label") or {}) or None
    return any(a.endswith("ForSequenceClassification") for a in architectures) and labels == 1


def reranker_max_length(model_dir: Path, requested: int | None) -> int:
    """Tokens a pair may hold, special tokens included: what the positions allow, capped by the
    tokenizer's model_max_length and by the request."""
    config = _config(model_dir)
    positions = int(config.get("max_position_embeddings", 512))
    limit = positions - POSITION_OFFSET.get(str(config.get("model_type")), 0)
    tokenizer_config = model_dir / "tokenizer_config.json"
    if tokenizer_config.is_file():
        declared = json.loads(tokenizer_config.read_text(encoding="utf-8")).get("model_max_length")
        if isinstance(declared, int) and 0 < declared < limit:
            limit = declared
    return min(limit, requested) if requested else limit


def export_reranker(
    source_id: str,
    model_dir: Path,
    out_dir: Path,
    opset: int,
    max_length: int | None,
    normalize: bool | None,
) -> ModelManifest:
    """Export the graph (input_ids, attention_mask[, token_type_ids] -> logits) and its
    tokenizer; the FP32 manifest, not yet written."""
    from optimum.exporters.onnx import main_export

    from ops.export.model import _versions, weights_sha256

    log.info("exporting reranker %s to %s (opset %d)", source_id, out_dir, opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings; fidelity is tested against torch
        main_export(
            str(model_dir),
            output=str(out_dir),
            task="text-classification",
            library_name="transformers",
            opset=opset,
            do_validation=False,
        )
    if not (out_dir / FAST_TOKENIZER_FILE).is_file():
        raise FileNotFoundError(f"{source_id} has no fast tokenizer (tokenizer.json) to ship")
    return ModelManifest(
        kind="reranker",
        source=source_id,
        weights_sha256=weights_sha256(model_dir),
        dimension=1,
        pooling="cls",
        normalize=True if normalize is None else normalize,
        max_length=reranker_max_length(model_dir, max_length),
        precision="fp32",
        onnx_file="model.onnx",
        opset=opset,
        versions=_versions(),
        output_name=LOGITS_OUTPUT,
        pooled_output=True,
    )
