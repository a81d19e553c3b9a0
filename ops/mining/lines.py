"""The queries file `embedq mine` reads: one `{"query", "pos": [...]}` or `{"query",
"pos_ids": [...]}` per line; other keys pass through to the output untouched."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class QueriesFileError(ValueError):
    """A queries file that cannot be mined; the message names the line and the field."""


@dataclass(frozen=True)
class QueryLine:
    """One line to mine: its 1-based number, the query, its positives as text or as ids of the
    collection's rows (one of the two), and the line as read, for the output."""

    number: int
    query: str
    pos_texts: tuple[str, ...]
    pos_ids: tuple[str, ...]
    row: dict[str, Any]


def _strings(row: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = row[key]
    if not isinstance(value, list) or not value:
        raise QueriesFileError(f"{where}: {key!r} must be a non-empty list of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise QueriesFileError(f"{where}: {key}[{index}] must be a non-empty string")
    return tuple(value)


def parse_line(number: int, text: str) -> QueryLine:
    """Validate one JSONL line."""
    where = f"line {number}"
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QueriesFileError(f"{where}: not JSON ({exc.msg})") from exc
    if not isinstance(row, dict):
        raise QueriesFileError(f"{where}: expected an object, got {type(row).__name__}")
    query = row.get("query")
    if not isinstance(query, str) or not query.strip():
        raise QueriesFileError(f"{where}: 'query' must be a non-empty string")
    has_texts, has_ids = "pos" in row, "pos_ids" in row
    if has_texts == has_ids:
        raise QueriesFileError(
            f"{where}: give the positives either as 'pos' (texts) or as 'pos_ids' "
            "(ids of the collection's rows), exactly one of the two"
        )
    texts = _strings(row, "pos", where) if has_texts else ()
    ids = _strings(row, "pos_ids", where) if has_ids else ()
    return QueryLine(number, query, texts, ids, row)


def read_lines(path: Path) -> list[QueryLine]:
    """Every non-blank line of the file, validated; the first bad one raises."""
    lines = []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if text.strip():
                lines.append(parse_line(number, text))
    if not lines:
        raise QueriesFileError(f"{path}: no queries")
    return lines


def text_key(prefix: str, text: str) -> str:
    """The id a text is embedded under in the query-vectors collection: equal texts share it,
    so a query or positive repeated on many lines is embedded once, and a rerun finds it."""
    return prefix + hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes: a rerun resumes only on the same input."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
