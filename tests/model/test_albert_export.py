"""export-model on a legacy ALBERT checkpoint laid out like voidful/albert_chinese_tiny
(BertTokenizer vocab.txt only, no sentence-transformers config), against a torch reference.

The model has random weights (no hub here): the figures show fidelity of the export and its
tokenizer, nothing about the real model's quality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from embedq_core.manifest import ModelManifest
from ops.cli.main import main
from ops.data.corpus import load_demo_corpus
from ops.export.model import ExportOptions, export_model
from tests.model_factory import build_tiny_albert_hub_style
from tests.support import engine_config
from workers.engine import Embedder


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """~20 Chinese texts, two of them with Latin letters (upper case, lower-cased) and digits."""
    chinese = [text for _, text in load_demo_corpus() if not text.isascii()]
    return [*chinese[:18], "他写了一个Python脚本来清洗数据。", "GPU 上的 FP16 模型：第3版"]


@pytest.fixture(scope="module")
def albert_source(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    return build_tiny_albert_hub_style(
        tmp_path_factory.mktemp("src") / "albert_chinese_tiny", texts
    )


@pytest.fixture(scope="module")
def albert_export(tmp_path_factory: pytest.TempPathFactory, albert_source: Path) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "albert"
    export_model(str(albert_source), out, ExportOptions(), engine_config())
    return out


def _reference(source: Path, texts: list[str]) -> tuple[np.ndarray, list[list[int]], int]:
    """AlbertModel's CLS hidden state on BertTokenizerFast(vocab.txt) tokens, L2-normalised (as
    the model card loads it); also the token ids and the [UNK] id."""
    import torch
    from transformers import AlbertModel, BertTokenizerFast

    tokenizer = BertTokenizerFast(
        vocab_file=str(source / "vocab.txt"), do_lower_case=True, tokenize_chinese_chars=True
    )
    model = AlbertModel.from_pretrained(source).eval()
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
        cls = model(**batch).last_hidden_state[:, 0]
        vectors = torch.nn.functional.normalize(cls, dim=-1).numpy()
    ids = [tokenizer(text)["input_ids"] for text in texts]
    return vectors, ids, int(tokenizer.unk_token_id)


def test_source_is_laid_out_like_the_hub_checkpoint(albert_source: Path) -> None:
    files = {p.name for p in albert_source.iterdir()}
    assert files == {"config.json", "pytorch_model.bin", "vocab.txt"}
    config = json.loads((albert_source / "config.json").read_text())
    assert (config["model_type"], config["hidden_size"], config["embedding_size"]) == (
        "albert",
        312,
        128,
    )


def test_manifest_is_cls_normalised_312d_with_a_tokenizer_json(albert_export: Path) -> None:
    manifest = ModelManifest.read(albert_export)
    assert (manifest.dimension, manifest.pooling, manifest.normalize, manifest.max_length) == (
        312,
        "cls",
        True,
        512,
    )
    assert manifest.query_instruction is None
    assert (albert_export / "tokenizer.json").is_file()
    assert (albert_export / manifest.onnx_file).is_file()


def test_onnx_vectors_match_the_torch_reference_on_every_text(
    albert_export: Path, albert_source: Path, texts: list[str]
) -> None:
    from tokenizers import Tokenizer

    reference, reference_ids, unk_id = _reference(albert_source, texts)
    for text, ids in zip(texts, reference_ids, strict=True):
        assert unk_id not in ids, text
    shipped = Tokenizer.from_file(str(albert_export / "tokenizer.json"))
    assert [e.ids for e in shipped.encode_batch(texts)] == reference_ids

    embedder = Embedder.from_model_dir(albert_export, engine_config(runtime="onnxruntime-cpu"))
    ours = embedder.embed(texts).vectors
    assert ours.shape == (len(texts), 312)
    cosines = np.sum(ours * reference, axis=1)
    assert cosines.min() >= 0.9999, texts[int(cosines.argmin())]


def test_cli_exports_the_legacy_checkpoint(albert_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-export"
    result = CliRunner().invoke(main, ["export-model", str(albert_source), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    manifest = ModelManifest.read(out)
    assert (manifest.dimension, manifest.pooling) == (312, "cls")
    assert (out / "tokenizer.json").is_file()
