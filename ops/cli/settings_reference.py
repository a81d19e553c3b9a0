"""The settings reference (docs/settings.md, `embedq settings`), rendered from the settings
object itself: each setting's description, default and bounds are defined once, in
embedq_core/settings.py, and a unit test fails when the page drifts from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from embedq_core.settings import Settings

# Names end in their unit (the style guide's rule); the reference spells it out.
UNIT_SUFFIXES = {
    "_s": "seconds",
    "_bytes": "bytes",
    "_chars": "characters",
    "_tokens": "tokens",
    "_items": "items",
    "_batches": "batches",
}
PAGE = Path("docs") / "settings.md"
INTRO = """# Settings

Every embedq process (API, worker, `embedq` commands) reads one typed settings object from the
environment at its entry point. A variable set to the empty string counts as unset;
`.env.example` lists every one for `docker compose`. This page is generated from
`embedq_core/settings.py` by `embedq settings > docs/settings.md`, and a test fails when the two
differ.
"""


def env_name(field: str) -> str:
    """The environment variable a setting is read from."""
    return field.upper() if field in ("database_url", "redis_url") else f"EMBEDQ_{field.upper()}"


def unit_of(field: str) -> str:
    """The unit a setting's name ends in ('' when none)."""
    for suffix, unit in UNIT_SUFFIXES.items():
        if field.endswith(suffix):
            return unit
    return ""


def _default(info: FieldInfo) -> str:
    value: Any = info.default
    if value is PydanticUndefined or value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _bounds(info: FieldInfo) -> str:
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    found = [
        f"{words[name]} {getattr(each, name)}"
        for each in info.metadata
        for name in words
        if getattr(each, name, None) is not None
    ]
    return ", ".join(found)


def render_markdown() -> str:
    """The whole reference page: one row per setting, in the settings object's order."""
    rows = [
        "| variable | default | unit | bounds | what it does |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, info in Settings.model_fields.items():
        description = (info.description or "").replace("|", "\\|")
        cells = [f"`{env_name(name)}`", _default(info), unit_of(name), _bounds(info), description]
        rows.append("| " + " | ".join(cells) + " |")
    return INTRO + "\n" + "\n".join(rows) + "\n"
