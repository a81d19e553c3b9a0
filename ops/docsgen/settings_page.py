"""The settings reference (docs/reference/settings.md, `embedq settings`), rendered from the
settings object itself: each setting's description, default and bounds are defined once, in
embedq_core/settings/, and a unit test fails when the page drifts from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from embedq_core.settings import GROUPS, Settings

# Names end in their unit (the style guide's rule); the reference spells it out.
UNIT_SUFFIXES = {
    "_s": "seconds",
    "_bytes": "bytes",
    "_chars": "characters",
    "_tokens": "tokens",
    "_items": "items",
    "_batches": "batches",
}
PAGE = Path("docs") / "reference" / "settings.md"
INTRO = """# Settings

Every embedq process (API, worker, `embedq` commands) reads one typed settings object from the
environment at its entry point. A variable set to the empty string counts as unset;
`.env.example` lists every one for `docker compose`. This page is generated from
`embedq_core/settings/` by `embedq docs generate`, and a test fails when the two differ.
`embedq settings` prints the same page.
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
    """The whole reference page: a section per settings group, a row per setting."""
    sections = [INTRO]
    for group in GROUPS:
        title = (group.__doc__ or group.__name__).strip()
        rows = [
            f"## {title}",
            "",
            "| variable | default | unit | bounds | what it does |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name in group.model_fields:
            info = Settings.model_fields[name]
            description = (info.description or "").replace("|", "\\|")
            cells = [
                f"`{env_name(name)}`",
                _default(info),
                unit_of(name),
                _bounds(info),
                description,
            ]
            rows.append("| " + " | ".join(cells) + " |")
        sections.append("\n".join(rows) + "\n")
    return "\n".join(sections)
