"""Fixtures of the end-to-end tier beyond the suite's own (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from embedq_core.catalog import register_model_dir
from ops.data.corpus import load_demo_corpus
from tests.e2e.reembed_harness import CHUNK, LOCK_TIMEOUT_S, ReembedEnv
from tests.e2e.vectorize_harness import LOCK_TIMEOUT_S as VECTORIZE_LOCK_TIMEOUT_S
from tests.e2e.vectorize_harness import VectorizeEnv
from tests.model_factory import build_tiny_albert
from tests.support import ServiceHandle, each_text_once, make_manifest_variant


@pytest.fixture(scope="module")
def zh_sentences() -> list[str]:
    return [t for i, t in load_demo_corpus() if i.startswith("zh")]


@pytest.fixture(scope="module")
def albert(
    tmp_path_factory: pytest.TempPathFactory, zh_sentences: list[str]
) -> Callable[[list[str]], np.ndarray]:
    """The legacy model: ALBERT-shaped, 312-d, CLS output, not normalised."""
    import torch
    from transformers import AlbertModel, AutoTokenizer

    source = build_tiny_albert(
        tmp_path_factory.mktemp("albert") / "albert", [*zh_sentences, "（第首版）改新旧0123456789"]
    )
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AlbertModel.from_pretrained(source).eval()

    def compute(texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), 256):
                batch = tokenizer(
                    texts[start : start + 256],
                    padding=True,
                    truncation=True,
                    max_length=128,
                    return_tensors="pt",
                )
                out.append(model(**batch).last_hidden_state[:, 0].numpy())
        return np.concatenate(out)

    known: dict[str, np.ndarray] = {}  # most tests fill their tables with the same texts

    def embed(texts: list[str]) -> np.ndarray:
        return each_text_once(known, texts, compute)

    return embed


@pytest.fixture
def env(services: ServiceHandle, tiny_bge_dir: Path, tmp_path: Path) -> Iterator[ReembedEnv]:
    settings = services.settings.model_copy(
        update={
            "model_dir": tiny_bge_dir,
            "reembed_chunk_size": CHUNK,
            "reembed_follow_interval_s": 0.3,
            "reconcile_interval_s": 1.0,
            "requeue_grace_s": 2.0,
            "reembed_maintenance_work_mem": "64MB",
            "reembed_max_step_attempts": 3,
            "reembed_step_retry_delay_s": 0.2,
            "reembed_max_row_attempts": 3,
            "reembed_row_retry_delay_s": 0.2,
            "reembed_lock_timeout_s": LOCK_TIMEOUT_S,
            "reembed_lock_retry_timeout_s": 60.0,
            "reembed_index_poll_interval_s": 0.3,
        }
    )
    environment = ReembedEnv(settings, tiny_bge_dir, tmp_path)
    yield environment
    for traffic in environment.traffic:
        traffic.stop()
    for worker in environment.workers:
        worker.stop()


@pytest.fixture
def venv(services: ServiceHandle, minilm_dir: Path, tmp_path: Path) -> Iterator[VectorizeEnv]:
    """A MiniLM export under its own manifest id, so only this test's workers serve it."""
    model_dir = tmp_path / "minilm-vectorize"
    manifest = make_manifest_variant(minilm_dir, model_dir, source_revision="test-vectorize")
    settings = services.settings.model_copy(
        update={
            "model_dir": model_dir,
            "reembed_chunk_size": 256,
            "reembed_follow_interval_s": 0.3,
            "reconcile_interval_s": 1.0,
            "requeue_grace_s": 2.0,
            "reembed_maintenance_work_mem": "64MB",
            "reembed_step_retry_delay_s": 0.2,
            "reembed_max_row_attempts": 3,
            "reembed_row_retry_delay_s": 0.3,
            "reembed_lock_timeout_s": VECTORIZE_LOCK_TIMEOUT_S,
            "reembed_index_poll_interval_s": 0.3,
        }
    )
    with services.engine.begin() as conn:  # as a worker or `embedq vectorize add` does
        register_model_dir(conn, model_dir)
    env = VectorizeEnv(settings, model_dir, manifest, tmp_path)
    yield env
    for worker in env.workers:
        worker.stop()
    with env.connect() as conn:  # no chain of this test's model left for the reconciler to revive
        conn.execute(
            "UPDATE reembed_migrations SET status = 'paused' WHERE manifest_id = %s"
            " AND status = 'running'",
            (manifest.manifest_id,),
        )
