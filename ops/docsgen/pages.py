"""The generated pages of the docs site and how each is rendered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _settings() -> str:
    from ops.docsgen.settings_page import render_markdown

    return render_markdown()


def _cli() -> str:
    from ops.cli.main import main
    from ops.docsgen.cli_page import render_markdown

    return render_markdown(main)


def _metrics() -> str:
    from ops.docsgen.metrics_page import render_markdown

    return render_markdown()


def _benchmarks() -> str:
    from ops.docsgen.benchmarks_page import render_markdown

    return render_markdown(ROOT)


GENERATED: dict[Path, Callable[[], str]] = {
    Path("docs/reference/settings.md"): _settings,
    Path("docs/reference/cli.md"): _cli,
    Path("docs/reference/metrics.md"): _metrics,
    Path("docs/benchmarks.md"): _benchmarks,
}


def stale_pages(root: Path = ROOT) -> list[Path]:
    """The generated pages whose file differs from what the code renders now."""
    return [
        page
        for page, render in GENERATED.items()
        if not (root / page).is_file() or (root / page).read_text(encoding="utf-8") != render()
    ]


def write_pages(root: Path = ROOT) -> list[Path]:
    """Render every generated page into the tree; returns the pages that changed."""
    changed = stale_pages(root)
    for page in changed:
        (root / page).parent.mkdir(parents=True, exist_ok=True)
        (root / page).write_text(GENERATED[page](), encoding="utf-8")
    return changed
