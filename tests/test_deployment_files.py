"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine), so they are checked
statically against the code: targets, commands, settings names and healthchecks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from embedq_core.settings import Settings
from ops.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _dockerfile_targets(path: Path) -> set[str]:
    return set(re.findall(r"^FROM \S+ AS (\S+)$", path.read_text(), flags=re.MULTILINE))


def _settings_env_names() -> set[str]:
    names = {f"EMBEDQ_{name.upper()}" for name in Settings.model_fields}
    return names | {"DATABASE_URL", "REDIS_URL"}


def test_every_built_service_names_an_existing_dockerfile_target() -> None:
    for name, service in _compose()["services"].items():
        build = service.get("build")
        if build is None:
            continue
        dockerfile = ROOT / build["dockerfile"]
        assert dockerfile.is_file(), name
        assert build["target"] in _dockerfile_targets(dockerfile), name


def test_every_embedq_command_exists_in_the_cli() -> None:
    commands = set(cli.commands)
    for name, service in _compose()["services"].items():
        command = service.get("command") or []
        if command[:1] == ["embedq"]:
            assert command[1] in commands, f"{name}: {command}"
    dockerfile = (ROOT / "ops/docker/Dockerfile").read_text()
    for used in re.findall(r'"embedq", "([a-z-]+)"', dockerfile):
        assert used in commands, used


def test_environment_variables_are_settings_the_code_reads() -> None:
    known = _settings_env_names()
    for name, service in _compose()["services"].items():
        for key in service.get("environment") or {}:
            if key.startswith("EMBEDQ_") or key in {"DATABASE_URL", "REDIS_URL"}:
                assert key in known, f"{name}: {key} is not a Settings field"


def test_services_are_ordered_by_health_and_migrations() -> None:
    services = _compose()["services"]
    for name in ("postgres", "valkey", "api"):
        assert "healthcheck" in services[name], name
    for name in ("api", "worker-gpu", "worker-cpu"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    # Each worker serves the directory its export step writes.
    for worker, export in (("worker-gpu", "export-model"), ("worker-cpu", "export-model-cpu")):
        model_dir = services[worker]["environment"]["EMBEDQ_MODEL_DIR"]
        command = services[export]["command"]
        assert command[command.index("--out") + 1] == model_dir
        assert services[worker]["depends_on"][export]["condition"] == (
            "service_completed_successfully"
        )
    assert services["export-model"]["command"][-2:] == ["--quantize", "fp16"]
    assert services["worker-gpu"]["environment"]["EMBEDQ_RUNTIME"] == "onnxruntime-cuda"
    assert services["migrate"]["command"] == ["embedq", "db", "upgrade"]


def test_database_url_in_compose_matches_postgres_service() -> None:
    services = _compose()["services"]
    pg = services["postgres"]["environment"]
    url = services["api"]["environment"]["DATABASE_URL"]
    expected = f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/"
    assert url == expected + pg["POSTGRES_DB"]
    assert services["api"]["environment"]["REDIS_URL"].startswith("redis://valkey:")


def test_the_api_extra_carries_what_the_api_imports_lazily() -> None:
    """The API image installs only the `api` extra: strict mode's token counter needs
    tokenizers there (a 500 in the image otherwise)."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    api_packages = {re.split(r"[<>=~\[]", dep)[0] for dep in extras["api"]}
    assert "import tokenizers" in (ROOT / "api" / "token_counter.py").read_text().replace(
        "from tokenizers import", "import tokenizers"
    )
    assert "tokenizers" in api_packages
    assert 'RUN pip install ".[api]"' in (ROOT / "ops" / "docker" / "Dockerfile").read_text()
