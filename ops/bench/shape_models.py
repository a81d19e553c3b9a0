"""The bench's models for a shape: random-weight source, FP32 export and OpenVINO INT8 export,
made once under a root directory and reused (building bge-large takes minutes)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from embedq_core.manifest import MANIFEST_FILENAME, ModelManifest
from ops.bench.shapes import ModelShape, build_shape_source
from ops.data.corpus import (
    calibration_texts,
    load_bench_corpus,
    load_bench_passages,
    load_demo_corpus,
)
from workers.engine.config import EngineConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchModels:
    """The three directories a bench run needs."""

    source_dir: Path  # Hugging Face directory, for the sentence-transformers peers
    fp32_dir: Path  # our export, FP32
    int8_dir: Path  # our export, int8-openvino


def int8_refusal(shape: ModelShape) -> str | None:
    """Why the bench builds and runs no INT8 model for shape, or None. export-model refuses
    INT8 for BGE-M3 exports, and ensure_int8_openvino calls the quantiser directly: the bench
    must refuse it itself rather than bypass that refusal."""
    if shape.sparse_head:
        return (
            "no INT8 for a sparse (BGE-M3) shape: export-model refuses it (its effect on the "
            "sparse head is unmeasured)"
        )
    return None


def _vocabulary_texts() -> list[str]:
    """Every text a bench or calibration run feeds the model, so none hits [UNK]."""
    return [
        *(t for _, t in load_bench_corpus()),
        *(t for _, t in load_bench_passages()),
        *(t for _, t in load_demo_corpus()),
        *calibration_texts(),
    ]


def ensure_int8_openvino(fp32_dir: Path, int8_dir: Path, engine: EngineConfig) -> ModelManifest:
    """An int8-openvino export next to fp32_dir: a copy of the FP32 export quantised in place,
    the same code as `export-model --quantize int8-openvino` after its FP32 step. Kept whatever
    the gate says (force): the bench reports fidelity, it does not ship the model."""
    from ops.export.quantize import QualityGate
    from ops.export.quantize_openvino import quantize_int8_openvino

    if (int8_dir / MANIFEST_FILENAME).is_file():
        return ModelManifest.read(int8_dir)
    work = int8_dir.with_name(int8_dir.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(fp32_dir, work)
    manifest = quantize_int8_openvino(
        work, ModelManifest.read(fp32_dir), QualityGate(), engine, force=True
    )
    manifest.write(work)
    work.rename(int8_dir)
    return manifest


def ensure_shape_models(shape: ModelShape, root: Path, engine: EngineConfig) -> BenchModels:
    """Build (once) the random-weight source for shape and export it like a real model (and
    quantise it unless int8_refusal says why not: then int8_dir does not exist)."""
    from ops.export.model import ExportOptions, export_model

    base = root / f"shape-{shape.name}"
    models = BenchModels(base / "source", base / "fp32", base / "int8-openvino")
    if not (models.source_dir / "config.json").is_file():
        log.info("building %s with random weights in %s", shape.name, models.source_dir)
        shutil.rmtree(models.source_dir, ignore_errors=True)
        build_shape_source(shape, models.source_dir, _vocabulary_texts())
    if not (models.fp32_dir / MANIFEST_FILENAME).is_file():
        options = ExportOptions(
            source_id=f"random-weights/{shape.name}", query_instruction=shape.query_instruction
        )
        export_model(str(models.source_dir), models.fp32_dir, options, engine)
    if int8_refusal(shape) is None:
        ensure_int8_openvino(models.fp32_dir, models.int8_dir, engine)
    return models
