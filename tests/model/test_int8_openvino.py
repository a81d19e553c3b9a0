"""INT8 for OpenVINO (NNCF): the export on real weights (MiniLM) and on a tiny random BERT,
the quality gate, and per-text determinism."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from embedq_core.manifest import ModelManifest
from ops.bench.shapes import SHAPES, build_shape_source
from ops.data.corpus import load_bench_corpus, load_bench_passages
from ops.export.quantize import QualityGate
from ops.export.quantize_openvino import OV_INT8_FILE, quantize_int8_openvino
from tests.support import engine_config
from workers.engine import Embedder


@pytest.fixture(scope="module")
def minilm_int8_dir(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's MiniLM FP32 export, quantised by the code export-model runs for
    --quantize int8-openvino after its FP32 step."""
    out = tmp_path_factory.mktemp("ov-int8") / "minilm"
    shutil.copytree(minilm_dir, out)
    manifest = quantize_int8_openvino(
        out, ModelManifest.read(minilm_dir), QualityGate(), engine_config()
    )
    manifest.write(out)
    return out


def test_minilm_int8_clears_the_default_gate_on_held_out_texts(
    minilm_int8_dir: Path, minilm_dir: Path
) -> None:
    manifest = ModelManifest.read(minilm_int8_dir)
    assert (manifest.precision, manifest.onnx_file) == ("int8-openvino", OV_INT8_FILE)
    assert manifest.quality["held_out_texts"] == 700
    # The default gate. The 0.995 / 0.95 aim is a figure of the machine (README, "INT8"): met
    # with VNNI (0.99779), not where OpenVINO emulates INT8 without it (0.99476).
    assert manifest.quality["mean_cos_vs_fp32"] >= QualityGate().min_mean_cos
    assert manifest.quality["recall_at_10_vs_fp32"] >= QualityGate().min_recall_at_10
    fp32_id = ModelManifest.read(minilm_dir).manifest_id
    assert manifest.manifest_id != fp32_id  # a different model, its own collection


def test_int8_vector_does_not_depend_on_its_batch(minilm_int8_dir: Path) -> None:
    embedder = Embedder.from_model_dir(minilm_int8_dir, engine_config())
    assert embedder.backend == "openvino-int8"
    texts = [t for _, t in load_bench_corpus()][:120] + [t for _, t in load_bench_passages(40)]
    in_corpus = embedder.embed(texts).vectors
    for index in (0, 7, 42, 130, 150):
        alone = embedder.embed([texts[index]]).vectors[0]
        with_others = embedder.embed([texts[index], *texts[::-7][:20]]).vectors[0]
        assert float(alone @ in_corpus[index]) >= 0.9999
        assert float(alone @ with_others) >= 0.9999


def _export(source: Path, out: Path, *gate: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli.main", "export-model", str(source), "--out", str(out),
         "--quantize", "int8-openvino", *gate],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip


def test_tiny_bert_export_and_gate_refusal(tmp_path: Path) -> None:
    texts = [t for _, t in load_bench_corpus()][:50] + [t for _, t in load_bench_passages(20)]
    source = build_shape_source(SHAPES["tiny-bert"], tmp_path / "src", texts)
    kept = _export(source, tmp_path / "kept", "--int8-min-mean-cos", "0.9", "--force")
    assert kept.returncode == 0, kept.stderr[-3000:]
    manifest = ModelManifest.read(tmp_path / "kept")
    assert manifest.precision == "int8-openvino" and (tmp_path / "kept" / OV_INT8_FILE).is_file()
    assert Embedder.from_model_dir(tmp_path / "kept", engine_config()).embed(["你好"]).vectors.any()
    # No INT8 model reaches cos 1.0: the gate refuses it and leaves a usable FP32 export.
    refused = _export(source, tmp_path / "refused", "--int8-min-mean-cos", "1.0")
    assert refused.returncode != 0 and "below the gate" in refused.stderr
    assert ModelManifest.read(tmp_path / "refused").precision == "fp32"
    assert not (tmp_path / "refused" / OV_INT8_FILE).exists()
    assert not (tmp_path / "refused" / OV_INT8_FILE).with_suffix(".bin").exists()
