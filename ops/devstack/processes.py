"""Running the API and worker as child processes (demo, dev stack and tests) and stopping them
so that none is left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from embedq_core.settings import Settings


def process_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a child embedq process reads these exact settings from."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()  # str() would pass the mask, not the secret
        if value is not None:
            env[f"EMBEDQ_{name.upper()}"] = str(value)
    env.update(extra or {})
    return env


class ChildProcess:
    """One embedq subcommand in its own session, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self._log_start = self._log.tell()
        # Own session: Ctrl-C in the terminal reaches only the parent, which stops children
        # in order (worker finishes its batch) instead of all dying at once.
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "ops.cli.main", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The end of the child's log, for error messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_text(self) -> str:
        """What the child has logged since it started (the file may hold earlier runs)."""
        with self.log_path.open("rb") as f:
            f.seek(self._log_start)
            return f.read().decode("utf-8", errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, as tests simulate)."""
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, wait for a clean exit, SIGKILL if it does not come."""
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def start_api(settings: Settings, log_dir: Path) -> ChildProcess:
    """Start `embedq api` and wait until /healthz answers."""
    child = ChildProcess("api", ["api"], process_env(settings), log_dir / "api.log")
    wait_http_ok(f"http://{settings.api_host}:{settings.api_port}/healthz", child)
    return child


def start_worker(settings: Settings, log_dir: Path, name: str = "worker") -> ChildProcess:
    """Start `embedq worker` and wait until it is consuming."""
    child = ChildProcess(name, ["worker"], process_env(settings), log_dir / f"{name}.log")
    wait_for_log(child, "ready.", timeout_s=120)
    return child


def wait_http_ok(url: str, child: ChildProcess, timeout_s: float = 30.0) -> None:
    """Poll url until it answers 200, failing early if the child died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):  # not listening yet
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout_s}s:\n{child.log_tail()}")


def wait_for_log(child: ChildProcess, needle: str, timeout_s: float) -> None:
    """Wait until the child's log contains needle (Celery prints 'ready.' once consuming)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}")
        if needle in child.log_text():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{child.name} not ready in {timeout_s}s:\n{child.log_tail()}")
