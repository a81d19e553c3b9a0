"""Checks that keep unstorable text out of Postgres (NUL bytes, lone surrogates)."""

from __future__ import annotations

from typing import Any


def check_storable_text(value: str) -> str:
    """Reject what Postgres text/jsonb cannot hold or UTF-8 cannot encode."""
    if "\x00" in value:
        raise ValueError("contains a NUL byte (\\u0000), which Postgres cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"contains a lone surrogate at position {exc.start}; send valid UTF-8 text"
        ) from exc
    return value


def check_storable_json(value: Any, path: str = "metadata") -> None:
    """Apply check_storable_text to every key and string inside a JSON value."""
    if isinstance(value, str):
        try:
            check_storable_text(value)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable_json(key, f"{path} key")
            check_storable_json(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_storable_json(item, f"{path}[{index}]")
