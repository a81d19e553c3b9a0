"""The CUDA path: runs where a GPU and onnxruntime-gpu are present, skips with the reason
otherwise. The FP16 conversion itself is checked everywhere."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from embedq_core.manifest import ModelManifest
from ops.data.corpus import load_bench_corpus
from ops.export.model import FP16_FILE, convert_fp16
from tests.support import engine_config
from workers.engine import Embedder
from workers.engine.backend_choice import BackendUnavailable

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
needs_gpu = pytest.mark.skipif(
    not HAS_CUDA,
    reason="no CUDAExecutionProvider: needs a GPU and the worker-gpu extra (onnxruntime-gpu)",
)


@pytest.fixture(scope="module")
def fp16_dir(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("fp16") / "minilm-fp16"
    shutil.copytree(minilm_dir, work)
    convert_fp16(work, ModelManifest.read(minilm_dir)).write(work)
    return work


def test_fp16_export_is_its_own_model_and_never_runs_on_cpu(fp16_dir: Path) -> None:
    manifest = ModelManifest.read(fp16_dir)
    assert (manifest.precision, manifest.onnx_file) == ("fp16", FP16_FILE)
    assert (fp16_dir / FP16_FILE).stat().st_size < 0.6 * (fp16_dir / "model.onnx").stat().st_size
    if not HAS_CUDA:
        with pytest.raises(BackendUnavailable, match="needs a GPU"):
            Embedder.from_model_dir(fp16_dir, engine_config())


@pytest.mark.gpu
@needs_gpu
def test_fp32_on_cuda_matches_cpu(minilm_dir: Path) -> None:
    texts = [t for _, t in load_bench_corpus()][:300]
    gpu = Embedder.from_model_dir(minilm_dir, engine_config(runtime="onnxruntime-cuda"))
    assert gpu.backend == "onnxruntime-cuda"
    gpu.warm_up()
    cpu = Embedder.from_model_dir(minilm_dir, engine_config(runtime="onnxruntime-cpu"))
    cosines = np.sum(gpu.embed(texts).vectors * cpu.embed(texts).vectors, axis=1)
    assert cosines.min() >= 0.9999


@pytest.mark.gpu
@needs_gpu
def test_fp16_on_cuda_is_faithful_to_fp32(fp16_dir: Path, minilm_dir: Path) -> None:
    texts = [t for _, t in load_bench_corpus()][:300]
    fp16 = Embedder.from_model_dir(fp16_dir, engine_config())
    assert fp16.backend == "onnxruntime-cuda"
    fp16.warm_up()
    fp32 = Embedder.from_model_dir(minilm_dir, engine_config(runtime="onnxruntime-cpu"))
    cosines = np.sum(fp16.embed(texts).vectors * fp32.embed(texts).vectors, axis=1)
    assert cosines.mean() >= 0.9999 and cosines.min() >= 0.999
