"""The generated pages (settings, CLI, metrics, benchmarks) are what the code renders now."""

from __future__ import annotations

from pathlib import Path

from embedq_core.settings import Settings
from ops.docsgen.pages import ROOT, stale_pages
from ops.docsgen.settings_page import env_name, render_markdown, unit_of


def test_generated_pages_match_the_code(tmp_path: Path) -> None:
    assert stale_pages() == [], "run `embedq docs generate`"
    assert stale_pages(tmp_path) != [], "a missing page counts as stale"
    assert (ROOT / "docs" / "reference" / "cli.md").read_text().count("## `embedq ") >= 20


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
