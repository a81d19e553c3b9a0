"""Export a Hugging Face model to ONNX with optimum and write its manifest.

Only model export (this module and the helpers it calls) imports torch, transformers and
optimum, and only when it runs.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

from embedq_core.manifest import ModelManifest
from ops.export.m3 import DENSE_OUTPUT, SPARSE_OUTPUT, SparseHead, export_m3
from ops.export.model_config import (
    FAST_TOKENIZER_FILE,
    SPARSE_LINEAR_FILE,
    Pooling,
    is_bge_m3,
    needs_wordpiece_tokenizer,
    read_source_semantics,
)
from ops.export.quiet import quiet_known_library_noise
from ops.export.reranker import export_reranker, is_reranker
from workers.engine.config import EngineConfig

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ExportOptions:
    """Choices for one export; None means 'as the source model's config says'."""

    pooling: Pooling | None = None
    normalize: bool | None = None
    max_length: int | None = None
    query_instruction: str | None = None
    quantize: Literal["none", "int8", "int8-openvino", "fp16"] = "none"
    int8_min_mean_cos: float = 0.99
    int8_min_recall_at_10: float = 0.90
    # Rerankers' INT8 gate: passage pairs ordered as FP32 orders them, relevance score error.
    int8_min_pair_agreement: float = 0.95
    int8_max_score_error: float = 0.02
    force: bool = False
    opset: int = 18
    revision: str | None = None
    source_id: str | None = None


def resolve_source(source: str, revision: str | None) -> tuple[Path, str | None]:
    """A local directory as is, or a hub id fetched (or found in the local HF cache)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve(), revision
    from huggingface_hub import snapshot_download

    local = snapshot_download(repo_id=source, revision=revision)
    return Path(local), revision or "main"


def weights_sha256(model_dir: Path, extra_files: tuple[str, ...] = ()) -> str:
    """sha256 over the weight files (and extra_files, e.g. a sparse head), so a manifest pins
    the exact weights."""
    found = [model_dir / name for name in WEIGHT_FILES if (model_dir / name).is_file()]
    if not found:
        raise FileNotFoundError(f"no weights ({', '.join(WEIGHT_FILES)}) in {model_dir}")
    digest = hashlib.sha256()
    for path in [*found, *(model_dir / name for name in extra_files)]:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for package in ("optimum", "optimum-onnx", "torch", "transformers", "onnx", "onnxruntime"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out


def export_model(
    source: str, out_dir: Path, options: ExportOptions, engine: EngineConfig
) -> ModelManifest:
    """Export SOURCE to out_dir/model.onnx (+ model_int8.onnx) and write the manifest. `engine`
    runs the INT8 fidelity check (on ONNX Runtime's CPU provider, whatever its runtime says)."""
    quiet_known_library_noise()
    model_dir, revision = resolve_source(source, options.revision)
    source_id = options.source_id or source
    if is_reranker(model_dir):
        return _export_reranker(source_id, model_dir, revision, out_dir, options, engine)
    semantics = read_source_semantics(model_dir, source_id)
    sparse = is_bge_m3(model_dir)
    # BGE-M3's dense vector is its CLS state (FlagEmbedding's default pooling).
    pooling = options.pooling or semantics.pooling or ("cls" if sparse else None)
    if sparse and pooling != "cls":
        raise ValueError(f"{source} is a BGE-M3 checkpoint: its dense vector is CLS-pooled")
    if sparse and options.quantize in ("int8", "int8-openvino"):
        raise ValueError(
            "INT8 is not offered for BGE-M3 exports: its effect on the sparse head is unmeasured"
        )
    if pooling is None:
        raise ValueError(
            f"{source} has no sentence-transformers pooling config: pass --pooling cls|mean"
        )
    normalize = options.normalize if options.normalize is not None else semantics.normalize
    max_length = options.max_length or semantics.max_length
    out_dir.mkdir(parents=True, exist_ok=True)
    head: SparseHead | None = None
    if sparse:
        head = export_m3(model_dir, out_dir, options.opset)
    else:
        _export_encoder(source, model_dir, out_dir, options.opset, max_length)
    fp32 = ModelManifest(
        source=source_id,
        source_revision=revision,
        weights_sha256=weights_sha256(model_dir, (SPARSE_LINEAR_FILE,) if sparse else ()),
        dimension=semantics.dimension,
        pooling=pooling,
        normalize=True if normalize is None else normalize,
        max_length=max_length,
        query_instruction=options.query_instruction or semantics.query_instruction,
        precision="fp32",
        onnx_file="model.onnx",
        opset=options.opset,
        versions=_versions(),
        output_name=DENSE_OUTPUT if head else "last_hidden_state",
        pooled_output=head is not None,
        sparse=head is not None,
        sparse_output_name=SPARSE_OUTPUT if head else None,
        vocab_size=head.vocab_size if head else None,
        sparse_dropped_token_ids=head.dropped_token_ids if head else [],
    )
    manifest = fp32
    if options.quantize == "fp16":
        manifest = convert_fp16(out_dir, fp32)
    elif options.quantize == "int8":
        from ops.export.quantize import QualityGate, quantize_int8

        gate = QualityGate(options.int8_min_mean_cos, options.int8_min_recall_at_10)
        manifest = quantize_int8(out_dir, fp32, gate, engine, force=options.force)
    elif options.quantize == "int8-openvino":
        from ops.export.quantize import QualityGate
        from ops.export.quantize_openvino import quantize_int8_openvino

        gate = QualityGate(options.int8_min_mean_cos, options.int8_min_recall_at_10)
        manifest = quantize_int8_openvino(out_dir, fp32, gate, engine, force=options.force)
    manifest.write(out_dir)
    return manifest


def _export_reranker(
    source_id: str,
    model_dir: Path,
    revision: str | None,
    out_dir: Path,
    options: ExportOptions,
    engine: EngineConfig,
) -> ModelManifest:
    if options.quantize == "int8":
        raise ValueError(
            "INT8 for rerankers is the OpenVINO one: use --quantize int8-openvino (NNCF, gated "
            "on pair order and score error)"
        )
    if options.pooling or options.query_instruction:
        raise ValueError("a reranker has no pooling or query instruction: drop those options")
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = export_reranker(
        source_id, model_dir, out_dir, options.opset, options.max_length, options.normalize
    ).model_copy(update={"source_revision": revision})
    manifest = fp32
    if options.quantize == "fp16":
        manifest = convert_fp16(out_dir, fp32)
    elif options.quantize == "int8-openvino":
        from ops.export.quantize_reranker import RerankGate, quantize_reranker_int8

        gate = RerankGate(options.int8_min_pair_agreement, options.int8_max_score_error)
        manifest = quantize_reranker_int8(out_dir, fp32, gate, engine, force=options.force)
    manifest.write(out_dir)
    return manifest


def _export_encoder(
    source: str, model_dir: Path, out_dir: Path, opset: int, max_length: int
) -> None:
    """The bare encoder with optimum (output last_hidden_state), and its fast tokenizer."""
    from optimum.exporters.onnx import main_export

    log.info("exporting %s to %s (opset %d)", source, out_dir, opset)
    # library_name=transformers: export the bare encoder (last_hidden_state); pooling and
    # normalisation are ours, driven by the manifest, for every runtime alike.
    with warnings.catch_warnings():
        # Tracer warnings about constant masks are expected for encoder exports; fidelity is
        # checked by the tests against the reference model instead.
        warnings.simplefilter("ignore")
        main_export(
            str(model_dir),
            output=str(out_dir),
            task="feature-extraction",
            library_name="transformers",
            opset=opset,
            do_validation=False,
        )
    if not (out_dir / FAST_TOKENIZER_FILE).is_file() and needs_wordpiece_tokenizer(model_dir):
        # optimum saves no tokenizer when AutoTokenizer cannot load one (a legacy ALBERT with a
        # BertTokenizer vocab.txt and no tokenizer config); build the one its model card names.
        from ops.export.wordpiece_tokenizer import write_wordpiece_tokenizer

        log.info("%s ships only vocab.txt: building a BERT WordPiece tokenizer.json", source)
        write_wordpiece_tokenizer(model_dir, out_dir, max_length)
    if not (out_dir / FAST_TOKENIZER_FILE).is_file():
        raise FileNotFoundError(f"{source} has no fast tokenizer (tokenizer.json) to ship")


FP16_FILE = "model_fp16.onnx"


def convert_fp16(out_dir: Path, fp32: ModelManifest) -> ModelManifest:
    """An FP16 copy of the export for GPU workers; inputs and outputs keep their types, so the
    engine feeds and reads it like the FP32 model. Runs only on CUDA (see backend_choice)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(out_dir / fp32.onnx_file))
    onnx.save(convert_float_to_float16(model, keep_io_types=True), str(out_dir / FP16_FILE))
    return fp32.model_copy(update={"precision": "fp16", "onnx_file": FP16_FILE})
