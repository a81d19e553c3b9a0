"""The README's first command: `embedq demo` end to end, with nothing left running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil


def _our_processes(marker: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if marker in cmdline or ("ops.cli.main" in cmdline and proc.pid != os.getpid()):
            found.append(cmdline)
    return found


def test_demo_runs_end_to_end_and_leaves_nothing_behind(tmp_path: Path, minilm_dir: Path) -> None:
    before = set(_our_processes(str(tmp_path)))
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        {"EMBEDQ_DATA_DIR": str(tmp_path), "EMBEDQ_MODEL_DIR": str(minilm_dir), "COLUMNS": "160"}
    )
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli.main", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "job completed: 269 embedded, 0 failed" in out
    # The paraphrase pair leads the neighbours of the password query, above anything unrelated.
    password_block = out.split("top 5 for: How can I change my password?")[1].split("top 5 for:")[0]
    lines = [line for line in password_block.splitlines() if "en-0" in line]
    assert {"en-020", "en-021"} == {lines[0].split("│")[2].strip(), lines[1].split("│")[2].strip()}
    assert "stopped API, worker, Valkey and Postgres" in out
    assert set(_our_processes(str(tmp_path))) - before == set()
