"""The images every deployment test runs, built once per session; and how long each deployment
step took, printed at the end of the run (the docs quote them)."""

from __future__ import annotations

import pytest

from tests.deployment import podman_stack as ps


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Our Dockerfile's targets and the third-party stand-ins, built on a debootstrapped base."""
    ps.ensure_tools()
    base = ps.base_image()
    ps.build_all(base, ps.BuildMounts.from_this_machine(tmp_path_factory.mktemp("builds")))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ps.TIMES.steps:
        return
    terminalreporter.section("deployment step times")
    for name, seconds, beside_others in ps.TIMES.steps:
        note = "  (beside other builds)" if beside_others else ""
        terminalreporter.write_line(f"{seconds:8.1f} s  {name}{note}")
    in_all = sum(s for _, s, beside_others in ps.TIMES.steps if not beside_others)
    terminalreporter.write_line(f"{in_all:8.1f} s  in all")
