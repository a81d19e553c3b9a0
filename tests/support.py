"""Helpers for tests that drive the real services."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from embedq_core.settings import Settings
from ops.processes import ChildProcess

FINISHED = {"completed", "completed_with_errors", "failed"}


@dataclass
class ServiceHandle:
    """Running API + worker processes and how to reach them."""

    settings: Settings
    engine: Engine
    children: list[ChildProcess]
    log_dir: Path

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def submit(self, collection: str, items: list[dict[str, Any]]) -> httpx.Response:
        return httpx.post(
            f"{self.api_url}/v1/collections/{collection}/jobs", json={"items": items}, timeout=30
        )

    def wait_job(self, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
        """Poll the job until it finishes; fail with the worker log if it does not."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job: dict[str, Any] = httpx.get(f"{self.api_url}/v1/jobs/{job_id}", timeout=10).json()
            if job["status"] in FINISHED:
                return job
            time.sleep(0.1)
        tails = "\n".join(f"--- {c.name}\n{c.log_tail()}" for c in self.children)
        raise AssertionError(f"job {job_id} not finished after {timeout_s}s\n{tails}")
