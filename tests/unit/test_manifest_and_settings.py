from __future__ import annotations

from pathlib import Path

import pytest

from embedq_core.db import libpq_url, sqlalchemy_url
from embedq_core.manifest import MANIFEST_FILENAME, ModelManifest
from embedq_core.settings import Settings
from embedq_core.tables import vector_table_name


def _manifest(**changes: object) -> ModelManifest:
    base = {
        "source": "BAAI/bge-large-zh-v1.5",
        "weights_sha256": "ab" * 32,
        "dimension": 1024,
        "pooling": "cls",
        "normalize": True,
        "max_length": 512,
        "query_instruction": "为这个句子生成表示以用于检索相关文章：",
        "precision": "fp32",
        "opset": 18,
    }
    return ModelManifest.model_validate({**base, **changes})


def test_manifest_id_is_stable_and_changes_with_what_changes_vectors() -> None:
    assert _manifest().manifest_id == _manifest(versions={"torch": "x"}).manifest_id
    assert _manifest().manifest_id.startswith("bge-large-zh-v1-5-fp32-")
    assert _manifest().manifest_id != _manifest(pooling="mean").manifest_id
    assert _manifest().manifest_id != _manifest(precision="int8").manifest_id


def test_manifest_round_trips_and_detects_tampering(tmp_path: Path) -> None:
    _manifest().write(tmp_path)
    assert ModelManifest.read(tmp_path) == _manifest()
    path = tmp_path / MANIFEST_FILENAME
    path.write_text(path.read_text().replace('"cls"', '"mean"'))
    with pytest.raises(ValueError, match="does not match"):
        ModelManifest.read(tmp_path)


def test_missing_manifest_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="embedq export-model"):
        ModelManifest.read(tmp_path)


def test_settings_read_plain_database_and_redis_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("REDIS_URL", "redis://h:1/0")
    monkeypatch.setenv("EMBEDQ_MAX_BATCH_TOKENS", "4096")
    settings = Settings()
    assert (settings.database_url, settings.redis_url) == ("postgresql://u@h/db", "redis://h:1/0")
    assert settings.max_batch_tokens == 4096


def test_url_conversions() -> None:
    assert sqlalchemy_url("postgresql://u@/d?host=/tmp") == "postgresql+psycopg://u@/d?host=/tmp"
    assert libpq_url("postgresql+psycopg://u@h/d") == "postgresql://u@h/d"
    with pytest.raises(ValueError):
        sqlalchemy_url("mysql://x")


@pytest.mark.parametrize("name", ["Docs", "1abc", "a-b", "songs; drop table x", "x" * 49, ""])
def test_collection_names_are_validated(name: str) -> None:
    with pytest.raises(ValueError):
        vector_table_name(name)
