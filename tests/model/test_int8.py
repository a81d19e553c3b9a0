"""INT8 export: the quality gate, the fidelity it records, and per-text determinism."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedq_core.manifest import ModelManifest
from ops.data.corpus import load_bench_corpus
from ops.devstack.bundled_model import BUNDLED_MODEL_ID, bundled_model_source
from ops.export.quantize import INT8_FILE, QualityGate, QualityGateFailed, quantize_int8
from tests.support import engine_config
from workers.engine import Embedder


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "minilm-int8"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ops.cli.main",
            "export-model",
            str(bundled_model_source()),
            "--out",
            str(out),
            "--quantize",
            "int8",
            "--source-id",
            BUNDLED_MODEL_ID,
            # MiniLM's ONNX Runtime INT8 sits at the default gate (mean cos 0.9904 measured on
            # a CPU with VNNI, 0.9897 on one without): this tests the gate's mechanics and what
            # it records, on a gate the model clears on both.
            "--int8-min-mean-cos",
            "0.985",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_int8_export_clears_the_gate_and_records_its_fidelity(int8_dir: Path) -> None:
    manifest = ModelManifest.read(int8_dir)
    assert (manifest.precision, manifest.onnx_file) == ("int8", INT8_FILE)
    assert manifest.quality["mean_cos_vs_fp32"] >= 0.985
    assert manifest.quality["recall_at_10_vs_fp32"] >= 0.90
    assert manifest.quality["held_out_texts"] == 500
    # The linear layers shrink to a quarter; the token embedding table stays FP32.
    assert (int8_dir / INT8_FILE).stat().st_size < 0.8 * (int8_dir / "model.onnx").stat().st_size


def test_int8_vector_does_not_depend_on_its_batch(int8_dir: Path) -> None:
    embedder = Embedder.from_model_dir(int8_dir, engine_config())
    assert embedder.backend == "onnxruntime-cpu"
    texts = [text for _, text in load_bench_corpus()][:200]
    in_corpus = embedder.embed(texts).vectors
    for index in (0, 7, 42, 150):
        alone = embedder.embed([texts[index]]).vectors[0]
        with_others = embedder.embed([texts[index], *texts[::-5][:30]]).vectors[0]
        assert float(alone @ in_corpus[index]) >= 0.9999
        assert float(alone @ with_others) >= 0.9999


def test_a_model_below_the_gate_is_refused_and_fp32_kept(int8_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "export"
    shutil.copytree(int8_dir, work)
    (work / INT8_FILE).unlink()
    fp32 = ModelManifest.read(work).model_copy(
        update={"precision": "fp32", "onnx_file": "model.onnx", "quality": {}}
    )
    fp32.write(work)
    with pytest.raises(QualityGateFailed, match="below the gate"):
        quantize_int8(
            work,
            fp32,
            QualityGate(min_mean_cos=0.9999, min_recall_at_10=0.99),
            engine_config(),
        )
    assert not (work / INT8_FILE).exists()
    assert ModelManifest.read(work) == fp32


def test_int8_is_close_to_fp32_on_a_paraphrase_query(int8_dir: Path, minilm_dir: Path) -> None:
    texts = ["How do I reset my password?", "The stock market fell sharply this morning."]
    query = "I forgot my login password and need to change it."
    for model_dir in (int8_dir, minilm_dir):
        embedder = Embedder.from_model_dir(model_dir, engine_config())
        docs = embedder.embed(texts).vectors
        q = embedder.embed([query], input_type="query").vectors[0]
        scores = docs @ q
        assert int(np.argmax(scores)) == 0
