"""The demo corpus that ships with the repo: mixed Chinese and English sentences."""

from __future__ import annotations

import json
from importlib import resources


def load_demo_corpus() -> list[tuple[str, str]]:
    """(id, text) pairs of the bundled corpus, in file order."""
    raw = resources.files("ops").joinpath("data/demo_corpus.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return [(str(row["id"]), str(row["text"])) for row in rows]
