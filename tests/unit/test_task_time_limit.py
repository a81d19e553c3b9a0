"""The task time limit: a setting below the visibility timeout, enforced by a watchdog that ends
the process (the solo pool enforces no Celery time limit)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from embedq_core.settings import Settings
from workers.background.watchdog import EXIT_CODE

HANG = """
import logging, time
logging.basicConfig(level=logging.INFO)
from workers.background.watchdog import time_limit
with time_limit(0.1, "quick"):
    pass
print("quick body finished", flush=True)
with time_limit({limit}, "job j batch 3"):
    time.sleep(60)
print("not reached", flush=True)
"""


def test_time_limit_must_stay_below_the_visibility_timeout() -> None:
    assert Settings(task_time_limit_s=900, visibility_timeout_s=3600).task_time_limit_s == 900
    with pytest.raises(ValidationError, match="task_time_limit_s"):
        Settings(task_time_limit_s=3600, visibility_timeout_s=3600)


def test_time_limit_must_stay_above_the_db_retry_timeout() -> None:
    assert Settings(task_time_limit_s=301, db_retry_timeout_s=300).task_time_limit_s == 301
    with pytest.raises(ValidationError, match="must be above db_retry_timeout_s"):
        Settings(task_time_limit_s=300, db_retry_timeout_s=300)
    with pytest.raises(ValidationError, match="ended by its own watchdog"):
        Settings(task_time_limit_s=3.0)


def test_watchdog_ends_a_hung_body_and_spares_a_quick_one() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", HANG.format(limit=1.0)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == EXIT_CODE, done.stderr
    assert "quick body finished" in done.stdout
    assert "not reached" not in done.stdout
    assert "job j batch 3 still running after task_time_limit_s=1.0" in done.stderr
    assert "time.sleep" in done.stderr or "<module>" in done.stderr  # where it hung
    assert elapsed < 20  # the 60 s body did not run out


def test_compose_restarts_a_worker_its_watchdog_ended() -> None:
    import yaml

    with open(Path(__file__).resolve().parents[2] / "docker-compose.yml") as f:
        services = yaml.safe_load(f)["services"]
    workers = [name for name in services if name.startswith("worker")]
    assert workers
    assert all(services[name].get("restart") == "unless-stopped" for name in workers)
