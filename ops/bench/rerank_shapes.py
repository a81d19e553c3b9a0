"""Reranker shapes for `embedq bench rerank --shape NAME`: a cross-encoder's architecture with
random weights (speed depends on the shape, not the weights), built and exported once."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embedq_core.manifest import MANIFEST_FILENAME
from ops.export.xlmr_tokenizer import write_xlmr_tokenizer

if TYPE_CHECKING:  # the `embedq` command loads this module in the API image too
    from workers.engine.config import EngineConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankerShape:
    """An XLM-RoBERTa sequence classifier with one label, as BAAI's rerankers are."""

    name: str
    stands_for: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_tokens: int  # pair length the model reads (positions minus XLM-R's offset of 2)
    vocab_size: int | None  # None: just the tokenizer's pieces (test shapes)


RERANKER_SHAPES = {
    shape.name: shape
    for shape in (
        # XLM-R large with 8,194 positions and the 250,002-row embedding, as the model's config.
        RerankerShape(
            "bge-reranker-v2-m3", "BAAI/bge-reranker-v2-m3", 1024, 24, 16, 4096, 8192, 250_002
        ),
        # XLM-R base with 514 positions.
        RerankerShape(
            "bge-reranker-base", "BAAI/bge-reranker-base", 768, 12, 12, 3072, 512, 250_002
        ),
        # For smoke runs and tests only.
        RerankerShape("tiny-reranker", "(none: a test shape)", 32, 2, 2, 64, 2048, None),
    )
}


def flops_per_token(shape: RerankerShape, seq_len: int) -> float:
    """Multiply-adds x 2 per token of the encoder at seq_len (linear layers and attention)."""
    h, i = shape.hidden, shape.intermediate
    return 2.0 * shape.layers * (4 * h * h + 2 * h * i + 2 * seq_len * h)


def build_reranker_source(shape: RerankerShape, model_dir: Path, texts: list[str]) -> Path:
    """A Hugging Face directory: XLMRobertaForSequenceClassification (one label), random
    weights (seeded), the offline XLM-R tokenizer covering `texts`."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    model_dir.mkdir(parents=True, exist_ok=True)
    pieces = write_xlmr_tokenizer(model_dir, texts, shape.max_tokens, max_word_chars=16)
    config = XLMRobertaConfig(
        vocab_size=shape.vocab_size or pieces,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=shape.max_tokens + 2,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=1,
    )
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(config)
    model.eval()
    model.save_pretrained(model_dir, safe_serialization=True)
    return model_dir


def ensure_reranker_models(
    shape: RerankerShape, root: Path, texts: list[str], engine: EngineConfig, int8: bool
) -> tuple[Path, Path, Path]:
    """(source directory, our FP32 export, our OpenVINO INT8 export), built once under root;
    the INT8 one only when asked for (its gate's measurement takes minutes on a large shape),
    and kept whatever its gate says: the bench reports its fidelity."""
    from ops.export.model import ExportOptions, export_model

    base = root / f"reranker-{shape.name}"
    source, fp32, int8_dir = base / "source", base / "fp32", base / "int8-openvino"
    if not (source / "config.json").is_file():
        log.info("building %s with random weights in %s", shape.name, source)
        shutil.rmtree(source, ignore_errors=True)
        build_reranker_source(shape, source, texts)
    if not (fp32 / MANIFEST_FILENAME).is_file():
        options = ExportOptions(source_id=f"random-weights/{shape.name}")
        export_model(str(source), fp32, options, engine)
    if int8 and not (int8_dir / MANIFEST_FILENAME).is_file():
        options = ExportOptions(
            source_id=f"random-weights/{shape.name}", quantize="int8-openvino", force=True
        )
        export_model(str(source), int8_dir, options, engine)
    return source, fp32, int8_dir
