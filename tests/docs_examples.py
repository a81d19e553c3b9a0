"""The code examples of the README and the docs site, as the suite runs them.

Every ```sql, ```python and ```bash block of a page carries a marker on the line before it:
`<!-- example: FIXTURE -->` (the suite runs it on that fixture) or `<!-- example-skip: REASON
-->`. A block whose body is a pymdownx.snippets include (`--8<-- "dir/file"`) runs the file under
docs/snippets once, however many pages (English and Chinese) include it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = ROOT / "docs" / "snippets"
CODE_LANGUAGES = {"sql", "python", "bash", "sh", "shell", "console"}
FIXTURES = {
    "sql": {"cookbook", "hybrid", "chunks", "runbook-before", "runbook-during", "runbook-after"},
    "bash": {"stack", "hybrid-stack", "rerank-stack", "demo"},
    "python": {"stack", "rerank-stack"},
}
FENCE_RE = re.compile(
    r"(?:^<!-- (?P<kind>example|example-skip): (?P<arg>.*?) -->\n)?"
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```",
    re.S | re.M,
)
INCLUDE_RE = re.compile(r'^\s*--8<-- "(?P<path>[^"]+)"\s*$')


@dataclass(frozen=True)
class Example:
    """One code block: where it is, its language, how it runs and its code."""

    where: str
    lang: str
    fixture: str | None
    skip_reason: str | None
    code: str
    snippet: str | None

    @property
    def key(self) -> str:
        """What identifies the code: its snippet file, or the code itself."""
        return self.snippet or f"{self.lang}:{self.code}"


def pages() -> list[Path]:
    """The README in both languages and every page of the docs site."""
    docs = [p for p in sorted((ROOT / "docs").rglob("*.md")) if SNIPPETS not in p.parents]
    return [ROOT / "README.md", ROOT / "README.zh-CN.md", *docs]


def _resolve(body: str) -> tuple[str, str | None]:
    lines = [line for line in body.splitlines() if line.strip()]
    if len(lines) == 1 and (match := INCLUDE_RE.match(lines[0])):
        path = SNIPPETS / match["path"]
        return path.read_text(encoding="utf-8"), match["path"]
    return body, None


def examples(page: Path) -> list[Example]:
    """Every fenced block of a page, code languages and others alike."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE_RE.finditer(text):
        line = text.count("\n", 0, match.start("body"))
        code, snippet = _resolve(match["body"])
        found.append(
            Example(
                where=f"{page.relative_to(ROOT)}:{line}",
                lang=match["lang"] or "",
                fixture=match["arg"] if match["kind"] == "example" else None,
                skip_reason=match["arg"] if match["kind"] == "example-skip" else None,
                code=code,
                snippet=snippet,
            )
        )
    return found


def all_examples() -> list[Example]:
    """The code examples of every page, in page order."""
    return [ex for page in pages() for ex in examples(page) if ex.lang in CODE_LANGUAGES]


def runnable(lang: str, fixtures: set[str] | None = None) -> list[Example]:
    """Each distinct example of that language to run (first place it appears), by fixture."""
    seen: dict[str, Example] = {}
    for ex in all_examples():
        if ex.lang == lang and ex.fixture and (fixtures is None or ex.fixture in fixtures):
            seen.setdefault(ex.key, ex)
    return list(seen.values())
