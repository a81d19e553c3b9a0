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


def load_bench_passages(count: int = 300) -> list[tuple[str, str]]:
    """(id, text) pairs of production-shaped passages: song lyrics, FAQ answers and product
    text (mostly Chinese), each one to five paragraphs of one genre from
    `data/bench_paragraphs.jsonl`, about 50 to 500 tokens. Built deterministically (a seeded
    generator), so every run measures the same texts; none of it is used for INT8 calibration."""
    import numpy as np

    raw = resources.files("ops").joinpath("data/bench_paragraphs.jsonl").read_text(encoding="utf-8")
    by_genre: dict[str, list[str]] = {}
    for line in raw.splitlines():
        if line.strip():
            row = json.loads(line)
            by_genre.setdefault(str(row["genre"]), []).append(str(row["text"]))
    genres = sorted(by_genre)
    rng = np.random.default_rng(12)
    passages: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(passages) < count:
        genre = genres[len(passages) % len(genres)]
        paragraphs = by_genre[genre]
        picked = rng.permutation(len(paragraphs))[: int(rng.integers(1, 6))]
        text = ("\n" if genre == "lyrics" else " ").join(paragraphs[i] for i in picked)
        if text not in seen:  # a repeated text would tie in every nearest-neighbour list
            seen.add(text)
            passages.append((f"passage-{len(passages):04d}-{genre}", text))
    return passages
