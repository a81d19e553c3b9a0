"""Print the requirements of embedq's base install plus the named extras, one per line, read
from pyproject.toml alone, so an image installs its dependencies in a layer that a code change
does not rebuild. Runs in an image build with the standard library only."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

SELF = re.compile(r"^embedq\[([^\]]+)\]$")


def requirements_of(project: dict[str, object], extras: list[str]) -> list[str]:
    """The base dependencies and those of each extra, following `embedq[...]` references."""
    table = project["project"]
    assert isinstance(table, dict)
    optional: dict[str, list[str]] = table.get("optional-dependencies", {})
    found: list[str] = list(table["dependencies"])
    seen: set[str] = set()
    pending = list(extras)
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}")
        seen.add(extra)
        for requirement in optional[extra]:
            nested = SELF.match(requirement)
            if nested:
                pending.extend(name.strip() for name in nested.group(1).split(","))
            elif requirement not in found:
                found.append(requirement)
    return found


def main() -> None:
    project = tomllib.loads(Path("pyproject.toml").read_text())
    print("\n".join(requirements_of(project, sys.argv[1:])))


if __name__ == "__main__":
    main()
