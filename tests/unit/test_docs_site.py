"""The docs site builds with mkdocs in strict mode: a broken link or anchor, a missing page in
the navigation or a missing snippet fails the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_site_builds_strictly_in_both_languages(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "getting-started" / "index.html").is_file()
    chinese = (tmp_path / "zh" / "getting-started" / "index.html").read_text(encoding="utf-8")
    assert "快速" in chinese, "the Chinese getting-started page was not built"
    cookbook = (tmp_path / "search" / "index.html").read_text(encoding="utf-8")
    assert "--8&lt;--" not in cookbook and "vectors_songs" in cookbook, "snippets not included"


def test_the_readme_stays_short_in_both_languages() -> None:
    for name in ("README.md", "README.zh-CN.md"):
        lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
        assert len(lines) <= 200, f"{name}: {len(lines)} lines"
    assert "README.zh-CN.md" in (ROOT / "README.md").read_text().splitlines()[0]
    assert "README.md" in (ROOT / "README.zh-CN.md").read_text().splitlines()[0]
