"""Labelled retrieval pairs in FlagEmbedding's format: one `{"query", "pos", "neg"}` per line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

SHIPPED_SET = "eval_zh.jsonl"


class DatasetError(ValueError):
    """A labelled file that cannot be evaluated; the message names the line and the field."""


@dataclass(frozen=True)
class EvalSet:
    """Queries and the distinct passages they are judged against.

    Passages are deduplicated in order of first appearance in the file; that order is the
    tie-break order of the rankings. `pos_ids[i]` and `neg_ids[i]` index into `passages`.
    """

    source: str
    queries: list[str]
    passages: list[str]
    pos_ids: list[list[int]]
    neg_ids: list[list[int]]

    @property
    def mean_test_pool_size(self) -> float:
        """Average number of candidates a query ranks in the test pool (its own pos + neg)."""
        sizes = [len(p) + len(n) for p, n in zip(self.pos_ids, self.neg_ids, strict=True)]
        return sum(sizes) / len(sizes)


def _text_list(row: dict[str, Any], key: str, where: str, allow_empty: bool) -> list[str]:
    if key not in row:
        raise DatasetError(f"{where}: missing key {key!r}")
    value = row[key]
    if not isinstance(value, list):
        raise DatasetError(
            f"{where}: {key!r} must be a list of strings, got {type(value).__name__}"
        )
    if not value and not allow_empty:
        raise DatasetError(f"{where}: {key!r} is empty; every query needs a relevant passage")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise DatasetError(f"{where}: {key}[{index}] must be a non-empty string")
    return value


def parse_eval_lines(text: str, source: str) -> EvalSet:
    """Parse and validate JSONL text. `neg` may be an empty list (such queries are only judged
    fairly on the global pool); a passage may not be both positive and negative for one query."""
    passage_index: dict[str, int] = {}
    queries: list[str] = []
    pos_ids: list[list[int]] = []
    neg_ids: list[list[int]] = []

    def ids(texts: list[str]) -> list[int]:
        # dict.fromkeys: a passage listed twice under one query counts once.
        return [passage_index.setdefault(t, len(passage_index)) for t in dict.fromkeys(texts)]

    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
        if "query" not in row:
            raise DatasetError(f"{where}: missing key 'query'")
        query = row["query"]
        if not isinstance(query, str) or not query.strip():
            raise DatasetError(f"{where}: 'query' must be a non-empty string")
        pos = _text_list(row, "pos", where, allow_empty=False)
        neg = _text_list(row, "neg", where, allow_empty=True)
        both = set(pos) & set(neg)
        if both:
            raise DatasetError(f"{where}: passage in both 'pos' and 'neg': {min(both)[:60]!r}")
        queries.append(query)
        pos_ids.append(ids(pos))
        neg_ids.append(ids(neg))
    if not queries:
        raise DatasetError(f"{source}: no labelled queries")
    return EvalSet(source, queries, list(passage_index), pos_ids, neg_ids)


def load_eval_set(path: Path | None = None) -> EvalSet:
    """Load a labelled JSONL file, or the shipped Chinese set (ops/data/eval_zh.jsonl)."""
    if path is None:
        shipped = resources.files("ops").joinpath(f"data/{SHIPPED_SET}")
        if not shipped.is_file():
            raise DatasetError(f"ops/data/{SHIPPED_SET} is not installed: pass --data FILE.jsonl")
        return parse_eval_lines(shipped.read_text(encoding="utf-8"), f"ops/data/{SHIPPED_SET}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    return parse_eval_lines(text, str(path))
