from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.devstack.bundled_model import bundled_model_source
from ops.export.model_config import read_source_semantics


def test_minilm_semantics_come_from_its_sentence_transformers_files() -> None:
    semantics = read_source_semantics(
        bundled_model_source(), "sentence-transformers/all-MiniLM-L6-v2"
    )
    assert (semantics.pooling, semantics.normalize, semantics.max_length, semantics.dimension) == (
        "mean",
        True,
        256,
        384,
    )
    assert semantics.query_instruction is None


def test_bge_zh_gets_its_published_query_instruction(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 1024}))
    semantics = read_source_semantics(tmp_path, "BAAI/bge-large-zh-v1.5")
    assert semantics.query_instruction == "为这个句子生成表示以用于检索相关文章："
    assert semantics.pooling is None  # no ST config: the exporter then demands --pooling


def test_unsupported_pooling_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    (tmp_path / "modules.json").write_text(
        json.dumps([{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    )
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_max_tokens": True})
    )
    with pytest.raises(ValueError, match="only CLS and mean"):
        read_source_semantics(tmp_path, "x")


def _albert_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "albert", "hidden_size": 312, "max_position_embeddings": 512})
    )


def test_legacy_wordpiece_albert_defaults_to_cls_and_normalised(tmp_path: Path) -> None:
    _albert_config(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
    semantics = read_source_semantics(tmp_path, "voidful/albert_chinese_tiny")
    assert (semantics.pooling, semantics.normalize, semantics.max_length, semantics.dimension) == (
        "cls",
        True,
        512,
        312,
    )


def test_sentencepiece_albert_still_needs_explicit_pooling(tmp_path: Path) -> None:
    _albert_config(tmp_path)
    (tmp_path / "spiece.model").write_bytes(b"")
    assert read_source_semantics(tmp_path, "albert/albert-base-v2").pooling is None
