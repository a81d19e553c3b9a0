"""Checks that keep unstorable or hostile input out of Postgres and out of the API's memory."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import JsonValue, WithJsonSchema

from api.errors import field_error
from embedq_core.settings import Settings

# Stated in the OpenAPI document (validated by check_storable_text and the blank checks, whose
# messages say what is wrong): no NUL, and at least one character that is not whitespace.
NON_BLANK_TEXT_SCHEMA: dict[str, JsonValue] = {"pattern": r"^[^\x00]*[^\s\x00][^\x00]*$"}
STORABLE_TEXT_SCHEMA: dict[str, JsonValue] = {"pattern": r"^[^\x00]*$"}


# A JSON object as Postgres jsonb can store it, stated as a recursive schema in the OpenAPI
# document (components added in api/openapi_limits.py); check_json enforces it with limits.
STORABLE_JSON_MARK = "x-embedq-storable-json"
StorableJsonObject = Annotated[
    dict[str, Any], WithJsonSchema({"type": "object", STORABLE_JSON_MARK: True})
]


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


@dataclass(frozen=True)
class JsonLimits:
    """How large a JSON value (metadata, a filter) may be, from the settings."""

    max_depth: int
    max_nodes: int
    max_key_chars: int


def check_json(value: Any, limits: JsonLimits) -> str | None:
    """Why value cannot be stored as jsonb within limits, or None when it can.

    Iterative with an explicit stack, and the path is built only for the error, so a deep or
    wide value costs time and memory linear in its size (a recursive walk that formats a path
    at every level is quadratic in the depth)."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 1, ())]
    nodes = 0
    while stack:
        item, depth, parents = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            return f"more than {limits.max_nodes} values in total"
        if depth > limits.max_depth:
            return f"nested deeper than {limits.max_depth} levels at {_path(parents)}"
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return f"{_path(parents)}: {problem}"
        elif isinstance(item, float) and not math.isfinite(item):
            return f"{_path(parents)}: {item} is not a JSON number (no NaN or Infinity in jsonb)"
        elif isinstance(item, dict):
            for key, child in item.items():
                if len(key) > limits.max_key_chars:
                    return (
                        f"a key at {_path(parents)} has {len(key)} characters; "
                        f"at most {limits.max_key_chars}"
                    )
                problem = _text_problem(key)
                if problem:
                    return f"a key at {_path(parents)}: {problem}"
                stack.append((child, depth + 1, (*parents, key) if depth < 8 else parents))
        elif isinstance(item, list):
            stack.extend((child, depth + 1, parents) for child in item)
    return None


def _text_problem(text: str) -> str | None:
    try:
        check_storable_text(text)
    except ValueError as exc:
        return str(exc)
    return None


def _path(parents: tuple[str | int, ...]) -> str:
    # Only the first levels are kept: a path through a hostile value must stay short.
    shown = "".join(f".{p[:40]}" if isinstance(p, str) else f"[{p}]" for p in parents)
    return "$" + shown


def check_text_chars(text: str, loc: list[str | int], settings: Settings) -> None:
    """A 422 naming the field when one text is longer than EMBEDQ_MAX_TEXT_CHARS (stated as
    maxLength in the OpenAPI document); a model reads at most its max_length tokens of it."""
    if len(text) > settings.max_text_chars:
        raise field_error(
            422,
            loc,
            f"text has {len(text)} characters; at most {settings.max_text_chars} per text",
            "too_long",
        )
