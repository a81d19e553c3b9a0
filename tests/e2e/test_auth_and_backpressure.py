"""API keys (missing, wrong, revoked: 401; health is open), the keys CLI, and 429 when the
queue is deeper than the limit."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from embedq_core.catalog import create_collection, register_model_dir
from ops.devstack.processes import ChildProcess, process_env, start_api
from ops.devstack.stack import free_port
from tests.support import ServiceHandle, make_manifest_variant


def _cli(services: ServiceHandle, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli.main", *args],
        env=process_env(services.settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_health_needs_no_key(services: ServiceHandle) -> None:
    assert httpx.get(f"{services.api_url}/healthz").status_code == 200
    ready = httpx.get(f"{services.api_url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"postgres": "ok", "broker": "ok"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer eq_wrong"},
        {"Authorization": "Basic abc"},
    ],
    ids=["missing", "wrong", "other scheme"],
)
def test_bad_keys_get_401_everywhere(services: ServiceHandle, headers: dict[str, str]) -> None:
    body = {"items": [{"id": "a", "text": "hello"}]}
    submit = httpx.post(f"{services.api_url}/v1/collections/docs/jobs", json=body, headers=headers)
    assert submit.status_code == 401
    assert submit.headers["WWW-Authenticate"] == "Bearer"
    job = httpx.get(
        f"{services.api_url}/v1/jobs/00000000-0000-0000-0000-000000000000", headers=headers
    )
    assert job.status_code == 401
    assert httpx.get(f"{services.api_url}/v1/collections/docs", headers=headers).status_code == 401


def test_keys_cli_creates_lists_and_revokes(services: ServiceHandle) -> None:
    created = _cli(services, "keys", "create", "cli-test")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("eq_")
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{services.api_url}/v1/collections/docs", headers=headers).status_code == 200

    listed = _cli(services, "keys", "list")
    assert "cli-test" in listed.stdout
    assert key not in listed.stdout  # only the prefix is ever shown
    key_id = next(line.split("\t")[0] for line in listed.stdout.splitlines() if "cli-test" in line)

    revoked = _cli(services, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.get(f"{services.api_url}/v1/collections/docs", headers=headers).status_code == 401
    assert "revoked" in _cli(services, "keys", "list").stdout
    assert _cli(services, "keys", "revoke", key_id).returncode != 0  # nothing left to revoke


def test_keys_never_reach_the_logs(services: ServiceHandle) -> None:
    api_log = (services.log_dir / "api.log").read_text(errors="replace")
    assert services.api_key not in api_log
    assert "eq_" not in api_log


@pytest.fixture
def throttled_api(
    services: ServiceHandle, tmp_path: Path, minilm_dir: Path
) -> Iterator[ServiceHandle]:
    """An API with a queue limit of 2 batches and a collection whose model no worker serves."""
    variant_dir = tmp_path / "unserved-model"
    make_manifest_variant(minilm_dir, variant_dir, max_length=200)
    with services.engine.begin() as conn:
        manifest = register_model_dir(conn, variant_dir)
    create_collection(services.engine, "unserved", manifest.manifest_id)
    settings = services.settings.model_copy(
        update={"api_port": free_port(), "max_queue_batches": 2, "retry_after_s": 7}
    )
    api: ChildProcess = start_api(settings, tmp_path)
    try:
        yield ServiceHandle(settings, services.engine, [api], tmp_path, services.api_key)
    finally:
        api.stop()


def test_deep_queue_gets_429_with_retry_after(throttled_api: ServiceHandle) -> None:
    for n in range(2):
        accepted = throttled_api.submit("unserved", [{"id": f"q{n}", "text": "waiting"}])
        assert accepted.status_code == 202, accepted.text
    refused = throttled_api.submit("unserved", [{"id": "q2", "text": "one too many"}])
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "7"
    assert "2 batches" in refused.json()["detail"][0]["msg"]
    # Other models' queues are not throttled by this one.
    assert throttled_api.submit("docs", [{"id": "q-ok", "text": "fine"}]).status_code == 202
