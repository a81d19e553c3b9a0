"""The bench pipeline's reference: the same engine in the bench's own process, on the same texts
(all in one call, or one call per task as the API cuts a job)."""

from __future__ import annotations

import time
from pathlib import Path

from embedq_core.settings import Settings
from embedq_core.task_batches import task_numbers
from ops.data.corpus import load_bench_corpus
from workers.engine import Embedder, EngineConfig


def bench_texts(count: int) -> list[str]:
    """count texts of realistic lengths (one sentence to several hundred tokens), distinct."""
    corpus = [text for _, text in load_bench_corpus()]
    return [f"{corpus[i % len(corpus)]} #{i}" for i in range(count)]


def api_task_numbers(texts: list[str], settings: Settings) -> list[int]:
    """Each text's task as the API cuts the bench's submissions (jobs of max_items_per_job
    texts, each cut by task_numbers), numbered across the jobs."""
    numbers: list[int] = []
    for start in range(0, len(texts), settings.max_items_per_job):
        job = task_numbers(
            texts[start : start + settings.max_items_per_job],
            settings.items_per_task,
            settings.tokens_per_task,
        )
        offset = max(numbers, default=-1) + 1
        numbers.extend(offset + number for number in job)
    return numbers


def bare_engine(model_dir: Path, config: EngineConfig, texts: list[str], tasks: list[int]) -> float:
    """Seconds the engine alone takes on texts, one call per task (`tasks`: each text's task
    number; all zeros: every text in one call, the engine's best, each text sorted by length
    with all the others)."""
    embedder = Embedder.from_model_dir(model_dir, config)
    embedder.warm_up()
    chunks: dict[int, list[str]] = {}
    for text, task in zip(texts, tasks, strict=True):
        chunks.setdefault(task, []).append(text)
    embedder.embed(chunks[tasks[0]])
    started = time.perf_counter()
    for chunk in chunks.values():
        embedder.embed(chunk)
    return time.perf_counter() - started
