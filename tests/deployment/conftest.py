"""Print how long each deployment step took, at the end of the run (the docs quote them)."""

from __future__ import annotations

import pytest

from tests.deployment.podman_stack import TIMES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMES.steps:
        return
    terminalreporter.section("deployment step times")
    for name, seconds in TIMES.steps:
        terminalreporter.write_line(f"{seconds:8.1f} s  {name}")
    terminalreporter.write_line(f"{sum(s for _, s in TIMES.steps):8.1f} s  in all")
