"""Bounded start-up waits: ready at once, ready after a few tries (logged), or a clear error
naming the dependency and the last reason; and the image builds' requirement lists."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

from embedq_core.startup_wait import DependencyUnavailable, model_check, wait_until_ready, where
from ops.deploy.docker.requirements_of import requirements_of

ROOT = Path(__file__).resolve().parents[2]


def test_a_ready_dependency_is_not_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        wait_until_ready("Postgres", lambda: None, timeout_s=1)
    assert caplog.text == ""


def test_each_reason_is_logged_once_and_readiness_with_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = iter(["refused", "refused", ConnectionError("reset"), None])

    def check() -> str | None:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with caplog.at_level(logging.INFO):
        wait_until_ready("the broker", check, timeout_s=30)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "waiting for the broker (up to 30 s): refused"
    assert lines[1] == "waiting for the broker (up to 30 s): ConnectionError: reset"
    assert lines[2].startswith("the broker is ready after ")
    assert len(lines) == 3


def test_a_dependency_that_never_comes_fails_naming_it_and_why() -> None:
    with pytest.raises(DependencyUnavailable) as raised:
        wait_until_ready("Postgres at db:5432", lambda: "no schema yet", timeout_s=0.3)
    assert str(raised.value) == (
        "Postgres at db:5432 not ready after 0.3 s (EMBEDQ_STARTUP_WAIT_S): no schema yet"
    )


def test_where_drops_credentials() -> None:
    assert where("postgresql://app:secret@db:5432/embedq") == "db:5432"
    assert where("redis://:secret@valkey:6379/0") == "valkey:6379"


def test_the_model_is_ready_once_its_manifest_is_written(tmp_path: Path) -> None:
    check = model_check(tmp_path)
    assert "embedq_manifest.json" in str(check())
    (tmp_path / "embedq_manifest.json").write_text("{}")
    assert check() is None


def test_an_image_installs_its_extra_and_the_extras_it_names() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    base = project["project"]["dependencies"]
    worker = requirements_of(project, ["worker"])
    assert worker[: len(base)] == base
    assert "onnxruntime>=1.18" in worker and not any(r.startswith("torch") for r in worker)
    demo = requirements_of(project, ["demo"])  # embedq[api,worker,...] is followed, not kept
    assert not any(r.startswith("embedq") for r in demo)
    assert "torch==2.13.0" in demo and "fastapi>=0.110" in demo
    with pytest.raises(SystemExit):
        requirements_of(project, ["no-such-extra"])
