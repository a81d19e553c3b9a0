"""The settings reference is rendered from the settings object, so it cannot drift from it."""

from __future__ import annotations

from pathlib import Path

from embedq_core.settings import Settings
from ops.cli.settings_reference import PAGE, env_name, render_markdown, unit_of

ROOT = Path(__file__).resolve().parents[2]


def test_docs_settings_page_is_the_rendered_reference() -> None:
    written = (ROOT / PAGE).read_text(encoding="utf-8")
    assert written == render_markdown(), "run `embedq settings > docs/settings.md`"


def test_every_setting_is_described_once_with_its_env_name() -> None:
    page = render_markdown()
    for name, info in Settings.model_fields.items():
        assert info.description, f"{name} has no description"
        assert page.count(f"| `{env_name(name)}` |") == 1, name


def test_units_come_from_the_names() -> None:
    assert unit_of("query_timeout_s") == "seconds"
    assert unit_of("max_request_bytes") == "bytes"
    assert unit_of("max_batch_tokens") == "tokens"
    assert unit_of("auth_required") == ""
