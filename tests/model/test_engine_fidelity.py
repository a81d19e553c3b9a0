"""The ONNX engine against the reference implementations, on real weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedq_core.manifest import ModelManifest
from ops.data.corpus import load_demo_corpus
from ops.devstack.bundled_model import bundled_model_source
from tests.model_factory import BGE_INSTRUCTION
from tests.support import engine_config
from workers.engine import Embedder
from workers.engine.backend_choice import RuntimeChoice
from workers.engine.hardware import Hardware, detect_hardware


@pytest.fixture(scope="module")
def corpus_texts() -> list[str]:
    return [text for _, text in load_demo_corpus()]


def _cls_reference(source_dir: Path, texts: list[str]) -> np.ndarray:
    """transformers AutoModel, CLS token, L2 normalise: bge-large-zh-v1.5's definition."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    model = AutoModel.from_pretrained(source_dir).eval()
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
        cls = model(**batch).last_hidden_state[:, 0]
        return torch.nn.functional.normalize(cls, dim=-1).numpy()


@pytest.fixture(scope="module")
def minilm_reference(corpus_texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(bundled_model_source()), device="cpu").encode(
        corpus_texts, normalize_embeddings=True, batch_size=32
    )


NO_AMX = Hardware(cpu_has_amx_bf16=False, has_cuda_provider=False, has_openvino=True)


OPENVINO_HERE = "openvino-bf16" if detect_hardware().cpu_has_bf16 else "openvino-fp32"


@pytest.mark.parametrize(
    ("runtime", "hardware", "backend", "streams"),
    [
        ("onnxruntime-cpu", None, "onnxruntime-cpu", 1),
        ("openvino", None, OPENVINO_HERE, 1),
        ("openvino", None, OPENVINO_HERE, 2),  # two batches at a time, each in its place
        ("auto", None, None, 1),  # whatever this machine's default is
        ("auto", NO_AMX, "onnxruntime-cpu", 1),  # the path of a CPU without AMX
    ],
    ids=["ort-cpu", "openvino", "openvino-2-streams", "auto-here", "auto-without-amx"],
)
def test_minilm_matches_sentence_transformers_on_every_text(
    minilm_dir: Path,
    corpus_texts: list[str],
    minilm_reference: np.ndarray,
    runtime: RuntimeChoice,
    hardware: Hardware | None,
    backend: str | None,
    streams: int,
) -> None:
    config = engine_config(runtime=runtime, streams=streams)
    embedder = Embedder.from_model_dir(minilm_dir, config, hardware)
    if backend is not None:
        assert embedder.backend == backend
    ours = embedder.embed(corpus_texts)
    cosines = np.sum(ours.vectors * minilm_reference, axis=1)
    assert cosines.min() >= 0.9999, (embedder.backend, corpus_texts[int(cosines.argmin())])
    assert ours.vectors.shape == (len(corpus_texts), 384)


def test_minilm_manifest_comes_from_the_models_own_config(minilm_manifest: ModelManifest) -> None:
    assert minilm_manifest.pooling == "mean"
    assert minilm_manifest.normalize is True
    assert minilm_manifest.max_length == 256
    assert minilm_manifest.dimension == 384
    assert minilm_manifest.query_instruction is None
    assert minilm_manifest.source == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(minilm_manifest.weights_sha256) == 64
    assert minilm_manifest.versions["onnxruntime"]


def test_bge_shaped_model_is_cls_pooled_1024d_like_the_reference(
    tiny_bge_dir: Path, corpus_texts: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    manifest = ModelManifest.read(tiny_bge_dir)
    assert (manifest.pooling, manifest.normalize, manifest.dimension, manifest.max_length) == (
        "cls",
        True,
        1024,
        512,
    )
    zh_texts = [t for t in corpus_texts if not t.isascii()][:40]
    source_dir = Path(manifest.source)
    ours = Embedder.from_model_dir(tiny_bge_dir, engine_config()).embed(zh_texts).vectors
    reference = _cls_reference(source_dir, zh_texts)
    assert np.sum(ours * reference, axis=1).min() >= 0.9999


def test_query_instruction_is_applied_to_queries_only(tiny_bge_dir: Path) -> None:
    manifest = ModelManifest.read(tiny_bge_dir)
    embedder = Embedder.from_model_dir(tiny_bge_dir, engine_config())
    text = "明天会下雨吗？"
    as_query = embedder.embed([text], input_type="query").vectors
    as_passage = embedder.embed([text], input_type="passage").vectors
    reference = _cls_reference(Path(manifest.source), [BGE_INSTRUCTION + text, text])
    assert float(as_query[0] @ reference[0]) >= 0.9999
    assert float(as_passage[0] @ reference[1]) >= 0.9999
    assert float(as_query[0] @ as_passage[0]) < 0.9999


def test_long_text_is_truncated_at_the_limit_and_flagged(tiny_bge_dir: Path) -> None:
    manifest = ModelManifest.read(tiny_bge_dir)
    embedder = Embedder.from_model_dir(tiny_bge_dir, engine_config())
    long_text = "猫在温暖的窗台上睡觉。" * 80
    result = embedder.embed([long_text, "短句。"])
    assert result.truncated == [True, False]
    assert result.token_counts[0] == manifest.max_length
    reference = _cls_reference(Path(manifest.source), [long_text])
    assert float(result.vectors[0] @ reference[0]) >= 0.9999


def test_fp32_vector_does_not_depend_on_batch_neighbours(
    minilm_dir: Path, corpus_texts: list[str]
) -> None:
    embedder = Embedder.from_model_dir(minilm_dir, engine_config())
    target = corpus_texts[5]
    alone = embedder.embed([target]).vectors[0]
    with_long = embedder.embed([target, *corpus_texts[100:140], "x " * 200]).vectors[0]
    assert float(alone @ with_long) >= 0.99999


class _NoTokenizing:
    """Stands in for the tokenizer after prepare(): run() must not tokenise again."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"run() used the tokenizer ({name})")


def test_texts_prepared_ahead_embed_as_in_one_call(
    tiny_bge_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker tokenises the next batch on its consumer thread (prepare) while the engine
    # thread runs the last one (run): the result must be embed()'s, instruction and limit kept.
    manifest = ModelManifest.read(tiny_bge_dir)
    embedder = Embedder.from_model_dir(tiny_bge_dir, engine_config())
    texts = ["明天会下雨吗？", "猫在温暖的窗台上睡觉。" * 80, "How to return a parcel", "短句。"]
    expected = embedder.embed(texts, input_type="query")
    prepared = embedder.prepare(texts, input_type="query")
    assert prepared.texts == tuple(BGE_INSTRUCTION + t for t in texts)
    monkeypatch.setattr(embedder, "_tokenizer", _NoTokenizing())
    result = embedder.run(prepared)
    assert result.truncated == expected.truncated == [False, True, False, False]
    assert result.token_counts == expected.token_counts
    assert result.token_counts[1] == manifest.max_length
    assert np.sum(result.vectors * expected.vectors, axis=1).min() >= 0.9999
