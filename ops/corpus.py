"""The demo corpus that ships with the repo: mixed Chinese and English sentences."""

from __future__ import annotations

import json
from importlib import resources


def _load(name: str) -> list[tuple[str, str]]:
    raw = resources.files("ops").joinpath(f"data/{name}").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return [(str(row["id"]), str(row["text"])) for row in rows]


def load_demo_corpus() -> list[tuple[str, str]]:
    """(id, text) pairs of the demo corpus: 269 short Chinese and English sentences."""
    return _load("demo_corpus.jsonl")


def load_bench_corpus() -> list[tuple[str, str]]:
    """(id, text) pairs of the benchmark corpus: 1,000 texts of mixed length (one sentence to
    a few hundred tokens) and language, built only from the odd-numbered demo sentences, so
    it is held out from INT8 calibration, which uses the even-numbered ones."""
    return _load("bench_corpus.jsonl")


def calibration_texts() -> list[str]:
    """Texts INT8 calibration sees: the even-numbered demo sentences, alone and joined in
    twos and fours so that longer inputs are represented too."""
    even = [text for index, (_, text) in enumerate(load_demo_corpus()) if index % 2 == 0]
    pairs = [even[i] + " " + even[i + 1] for i in range(0, len(even) - 1, 2)]
    fours = [" ".join(even[i : i + 4]) for i in range(0, len(even) - 3, 4)]
    return even + pairs + fours
