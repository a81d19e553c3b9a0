"""docker-compose.yml, the Dockerfile, .env.example and the Prometheus and Grafana files, checked
statically against the code in seconds: targets, commands, settings names, secrets, healthchecks
and restart policies, the GPU reservation, what Prometheus scrapes, and the metric names the
dashboard and the alerts query. tests/deployment builds the images and runs the stack for real;
these are its fast first line."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, cast

import click
import yaml
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import Metric
from sqlalchemy import Engine

from api.metrics import StoreMetrics
from api.request_metrics import HttpMetrics
from embedq_core.settings import Settings
from ops.cli.main import main as cli
from workers.telemetry import series as worker_metrics

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "ops" / "deploy" / "docker" / "Dockerfile"
INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::?[-?][^}]*)?\}")
SECRET_NAME = re.compile(r"(^|_)(PASSWORD|TOKEN|SECRET|BASIC_AUTH)($|_)")
# Environment variables of our images that a library reads, not the settings object.
LIBRARY_ENV = {"HF_HOME", "HF_ENDPOINT"}
# Settings that compose sets per service (or that mean nothing under compose), with why; every
# other setting is passed from .env to the API and workers by the x-app-env block.
NOT_PASSED_THROUGH = {
    "DATABASE_URL": "composed from EMBEDQ_APP_DB_ROLE/PASSWORD (migrate: the superuser)",
    "REDIS_URL": "composed from VALKEY_PASSWORD",
    "EMBEDQ_DATABASE_URL": "alias of DATABASE_URL",
    "EMBEDQ_REDIS_URL": "alias of REDIS_URL",
    "EMBEDQ_MODEL_DIR": "per worker service: the directory its export step writes",
    "EMBEDQ_RUNTIME": "per worker service",
    "EMBEDQ_API_HOST": "the api service's listener",
    "EMBEDQ_API_PORT": "the api service's listener",
    "EMBEDQ_WORKER_METRICS_HOST": "per worker service: the listener Prometheus scrapes",
    "EMBEDQ_WORKER_METRICS_PORT": "per worker service: the listener Prometheus scrapes",
    "EMBEDQ_APP_DB_ROLE": "migrate only (creates the role); in DATABASE_URL for the others",
    "EMBEDQ_APP_DB_PASSWORD": "migrate only (creates the role); in DATABASE_URL for the others",
    "EMBEDQ_DATA_DIR": "the embedded dev stack only",
}


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _compose()["services"]
    return services


def _ours(service: dict[str, Any]) -> bool:
    """Built from our Dockerfile (runs our code)."""
    return "build" in service


def _dockerfile_targets(path: Path) -> set[str]:
    return set(re.findall(r"^FROM \S+ AS (\S+)$", path.read_text(), flags=re.MULTILINE))


def _dockerfile_stages() -> dict[str, str]:
    """Each target's lines, from its FROM to the next."""
    parts = re.split(r"^(?=FROM )", DOCKERFILE.read_text(), flags=re.MULTILINE)
    stages = {}
    for part in parts:
        match = re.match(r"FROM \S+ AS (\S+)", part)
        if match:
            stages[match.group(1)] = part
    return stages


def _settings_env_names() -> set[str]:
    names = {f"EMBEDQ_{name.upper()}" for name in Settings.model_fields}
    return names | {"DATABASE_URL", "REDIS_URL"}


def _field_of(env_name: str) -> str:
    return {"DATABASE_URL": "database_url", "REDIS_URL": "redis_url"}.get(
        env_name, env_name.removeprefix("EMBEDQ_").lower()
    )


def _env_example() -> dict[str, tuple[str, bool]]:
    """name -> (value, commented out) for every variable .env.example documents."""
    found = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            found[match.group(2)] = (match.group(3), match.group(1) is not None)
    return found


def _interpolated(text: str) -> set[str]:
    return set(INTERPOLATION.findall(text))


def _long_running(services: dict[str, Any]) -> set[str]:
    """Services nothing waits on to complete."""
    one_shot = {
        dependency
        for service in services.values()
        for dependency, condition in (service.get("depends_on") or {}).items()
        if isinstance(condition, dict)
        and condition.get("condition") == "service_completed_successfully"
    }
    return set(services) - one_shot


def test_every_built_service_names_an_existing_dockerfile_target() -> None:
    for name, service in _services().items():
        build = service.get("build")
        if build is None:
            continue
        dockerfile = ROOT / build["dockerfile"]
        assert dockerfile.is_file(), name
        assert build["target"] in _dockerfile_targets(dockerfile), name


def _assert_cli_command(words: list[str], where: str) -> None:
    group: click.Command = cli
    for word in words:
        if word.startswith("-") or not isinstance(group, click.Group):
            return
        assert word in group.commands, f"{where}: {words}"
        group = group.commands[word]


def test_every_embedq_command_exists_in_the_cli() -> None:
    stages = _dockerfile_stages()
    for name, service in _services().items():
        command = service.get("command") or []
        if command[:1] == ["embedq"]:
            _assert_cli_command(command[1:], name)
        elif _ours(service):  # arguments to the image's ENTRYPOINT
            entry = re.search(r"^ENTRYPOINT (.+)$", stages[service["build"]["target"]], re.M)
            assert entry is not None, name
            words = json.loads(entry.group(1))
            assert words[0] == "embedq", name
            _assert_cli_command(words[1:], name)
    dockerfile = DOCKERFILE.read_text()
    for used in re.findall(r'"embedq", "([a-z-]+)"', dockerfile):
        assert used in cli.commands, used


def test_environment_variables_are_settings_the_code_reads() -> None:
    known = _settings_env_names()
    for name, service in _services().items():
        if not _ours(service):
            continue
        for key in service.get("environment") or {}:
            assert key in known or key in LIBRARY_ENV, f"{name}: {key} is not a Settings field"
    anchor = _compose()["x-app-env"]
    assert set(anchor) <= known


def test_every_setting_reaches_api_and_workers_from_dot_env() -> None:
    """A setting in .env takes effect: x-app-env passes each one through, by its own name."""
    anchor = _compose()["x-app-env"]
    for env_name in sorted(_settings_env_names() - set(NOT_PASSED_THROUGH)):
        assert env_name in anchor, f"{env_name}: pass it through in x-app-env"
        assert _interpolated(str(anchor[env_name])) == {env_name}, env_name
    services = _services()
    for name in ("api", "worker-gpu", "worker-cpu"):
        assert set(anchor) <= set(services[name]["environment"]), name


def test_env_example_documents_every_variable_and_matches_the_settings() -> None:
    documented = _env_example()
    compose_text = (ROOT / "docker-compose.yml").read_text()
    compose_vars = _interpolated(compose_text) | {
        s["environment"] for s in (_compose().get("secrets") or {}).values()
    }
    settings = _settings_env_names() - {"EMBEDQ_DATABASE_URL", "EMBEDQ_REDIS_URL"}
    assert settings <= set(documented), settings - set(documented)
    assert compose_vars <= set(documented), compose_vars - set(documented)
    assert set(documented) <= settings | compose_vars, set(documented) - settings - compose_vars
    # A commented line shows the default: the settings object agrees.
    for env_name, (value, commented) in documented.items():
        if commented and env_name in settings and value and "<" not in value:
            field = _field_of(env_name)
            parsed = getattr(Settings.model_validate({field: value}), field)
            assert parsed == Settings.model_fields[field].default, (env_name, value)


def test_no_secret_value_is_committed() -> None:
    for name, (value, _) in _env_example().items():
        if SECRET_NAME.search(name):
            assert value == "", f".env.example: {name} must be empty"
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
    assert not (ROOT / ".env").exists() or ".env" in (ROOT / ".gitignore").read_text()

    def check(where: str, key: str, value: Any) -> None:
        text = str(value)
        if SECRET_NAME.search(key):
            assert re.fullmatch(r"\$\{[A-Z0-9_]+(:\?[^}]*)?\}", text), f"{where}: {key}"
        for password in re.findall(r"://[^:/@\s]*:([^@\s]*)@", text):
            assert password.startswith("${"), f"{where}: {key} holds a password"

    compose = _compose()
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            check(name, key, value)
        for index, word in enumerate(service.get("command") or []):
            check(name, f"command[{index}]", word)
            if index and service["command"][index - 1] == "--requirepass":
                assert str(word).startswith("${VALKEY_PASSWORD"), name
    for key, value in compose["x-app-env"].items():
        check("x-app-env", key, value)
    for path in (ROOT / "ops" / "deploy" / "prometheus").glob("*.yml"):
        text = path.read_text()
        assert not re.search(r"^\s*(password|credentials|bearer_token):", text, re.M), path
    for path in (ROOT / "ops" / "deploy" / "grafana").rglob("*.yml"):
        assert not re.search(r"password|secureJsonData", path.read_text(), re.I), path


def test_long_running_services_restart_and_are_health_checked() -> None:
    services = _services()
    long_running = _long_running(services)
    assert {"postgres", "valkey", "api", "worker-gpu", "worker-cpu"} <= long_running
    assert {"prometheus", "grafana", "flower"} <= long_running
    for name in long_running:
        service = services[name]
        assert service.get("restart") == "unless-stopped", name
        assert service.get("healthcheck", {}).get("test"), name
    for name in set(services) - long_running:  # one-shot steps end, and stay ended
        assert services[name].get("restart", "no") == "no", name
    for name in ("worker-gpu", "worker-cpu"):
        test = " ".join(services[name]["healthcheck"]["test"])
        port = services[name]["environment"]["EMBEDQ_WORKER_METRICS_PORT"]
        assert f"127.0.0.1:{port}/healthz" in test, name
        assert services[name]["environment"]["EMBEDQ_WORKER_METRICS_HOST"] == "0.0.0.0"
        assert services[name]["stop_grace_period"]


def test_services_are_ordered_by_health_and_migrations() -> None:
    services = _services()
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


def test_gpu_worker_reserves_a_gpu() -> None:
    devices = _services()["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert devices[0].get("count") == 1 or len(devices[0].get("device_ids", [])) == 1


def test_app_and_migration_use_different_database_roles() -> None:
    """API and workers log in as the app role; only `migrate` uses the superuser, and it
    creates the very role the others use."""
    services = _services()
    app_url = services["api"]["environment"]["DATABASE_URL"]
    assert app_url.startswith("postgresql://${EMBEDQ_APP_DB_ROLE:-embedq_app}:")
    assert "${EMBEDQ_APP_DB_PASSWORD:?" in app_url and app_url.endswith("@postgres:5432/embedq")
    migrate = services["migrate"]["environment"]
    assert migrate["DATABASE_URL"].startswith("postgresql://postgres:${POSTGRES_PASSWORD:?")
    assert migrate["EMBEDQ_APP_DB_ROLE"] == "${EMBEDQ_APP_DB_ROLE:-embedq_app}"
    assert "${EMBEDQ_APP_DB_PASSWORD:?" in migrate["EMBEDQ_APP_DB_PASSWORD"]
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_DB"] == "embedq" and "POSTGRES_USER" not in postgres
    assert services["api"]["environment"]["REDIS_URL"].startswith("redis://:${VALKEY_PASSWORD:?")


def test_images_run_unprivileged_and_workers_carry_only_their_runtime() -> None:
    stages = _dockerfile_stages()
    for target in ("api", "worker-cpu", "worker-gpu", "export"):
        assert re.search(r"^USER embedq$", stages[target], re.M), target
    for target, extra in (("worker-cpu", "worker"), ("worker-gpu", "worker-gpu")):
        assert f"requirements_of.py {extra} " in stages[target], target
        assert "COPY api" not in stages[target], target
    assert "COPY api" not in stages["base"] and "COPY workers" not in stages["base"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra in ("worker", "worker-gpu"):
        packages = {re.split(r"[<>=~\[]", dep)[0] for dep in extras[extra]}
        assert not packages & {"torch", "transformers", "optimum", "fastapi", "uvicorn"}, extra
        assert "prometheus-client" in packages, extra
    for name, service in _services().items():
        assert str(service.get("user", "")) not in {"root", "0"}, name
        assert not service.get("privileged"), name


def _exported_metric_names() -> set[str]:
    """Sample names the code exports: the workers' registry, the API's request series, the
    API's refreshed figures, and Prometheus's own `up`."""
    families: list[Metric] = list(worker_metrics.REGISTRY.collect())
    api_registry = CollectorRegistry()
    HttpMetrics(api_registry)
    ProcessCollector(registry=api_registry)
    families += list(api_registry.collect())
    families += list(StoreMetrics(cast(Engine, None), None, 0.0, with_names=True).describe())
    suffixes = {
        "counter": ["_total", "_created"],
        "histogram": ["_bucket", "_sum", "_count", "_created"],
        "info": ["_info"],
    }
    names = {"up"}
    for family in families:
        names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset"}


def _metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (not functions, labels, keywords or numbers)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"(?<![\w.])\d+(\.\d+)?([eE][+-]?\d+)?", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group(0) in PROMQL_KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def test_dashboard_and_alerts_query_only_metrics_the_code_exports() -> None:
    exported = _exported_metric_names()
    assert {"embedq_worker_texts_embedded_total", "embedq_http_requests_total"} <= exported
    assert _metric_names('sum by (le) (rate(a_b_bucket{x="y"}[5m])) / on (m) c > 0.5') == {
        "a_b_bucket",
        "c",
    }
    dashboard = json.loads(
        (ROOT / "ops" / "deploy" / "grafana" / "dashboards" / "embedq.json").read_text()
    )
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("throughput", "latency", "error", "queue", "migration"):
        assert topic in titles or topic in json.dumps(dashboard).lower(), topic
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        for target in panel["targets"]:
            used |= _metric_names(target["expr"])
    assert used, "the dashboard queries nothing"
    assert used <= exported, used - exported
    datasource = yaml.safe_load(
        (ROOT / "ops/deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert {p["datasource"]["uid"] for p in panels} == {datasource["uid"]}
    assert datasource["url"] == "http://prometheus:9090"

    alerts = yaml.safe_load((ROOT / "ops" / "deploy" / "prometheus" / "alerts.yml").read_text())
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    assert len(rules) >= 8
    for rule in rules:
        names = _metric_names(rule["expr"])
        assert names and names <= exported, (rule["alert"], names - exported)


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    grafana = _services()["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    provider = yaml.safe_load(
        (ROOT / "ops/deploy/grafana/provisioning/dashboards/embedq.yml").read_text()
    )["providers"][0]
    assert mounts["./ops/deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./ops/deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert "${GRAFANA_ADMIN_PASSWORD:?" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


def test_prometheus_scrapes_every_service_that_exposes_metrics() -> None:
    services = _services()
    prometheus = services["prometheus"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in prometheus["volumes"]}
    config_dir = mounts["./ops/deploy/prometheus"]
    config = yaml.safe_load((ROOT / "ops" / "deploy" / "prometheus" / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (
            ROOT / "ops" / "deploy" / "prometheus" / Path(rule_file).relative_to(config_dir)
        ).is_file()
    static: set[str] = set()
    discovered: set[tuple[str, int]] = set()
    for job in config["scrape_configs"]:
        targets = {t for c in job.get("static_configs", []) for t in c["targets"]}
        names = {(n, int(c["port"])) for c in job.get("dns_sd_configs", []) for n in c["names"]}
        static |= targets
        discovered |= names
        if job["job_name"].startswith("embedq"):  # our endpoints: the token, from .env
            token_file = job["authorization"]["credentials_file"]
            assert token_file == "/prometheus/metrics_token", job["job_name"]
    # The entrypoint writes the token from the environment to that file, then runs Prometheus.
    entrypoint = " ".join(prometheus["entrypoint"])
    assert '"$$EMBEDQ_METRICS_TOKEN" > /prometheus/metrics_token' in entrypoint
    assert "exec /bin/prometheus --config.file=/etc/prometheus/prometheus.yml" in entrypoint
    assert prometheus["environment"]["EMBEDQ_METRICS_TOKEN"].startswith("${EMBEDQ_METRICS_TOKEN:?")
    exposing = 0
    for name, service in services.items():
        env = service.get("environment") or {}
        if service.get("command") == ["embedq", "api"]:
            assert f"{name}:{env['EMBEDQ_API_PORT']}" in static, name
            exposing += 1
        if "EMBEDQ_WORKER_METRICS_PORT" in env:
            port = int(env["EMBEDQ_WORKER_METRICS_PORT"])
            assert (name, port) in discovered or f"{name}:{port}" in static, name
            assert str(port) in [str(p) for p in service.get("expose", [])], name
            exposing += 1
        if _ours(service) and name in _long_running(services):
            assert env.get("EMBEDQ_METRICS_TOKEN") == "${EMBEDQ_METRICS_TOKEN:?set " + (
                "EMBEDQ_METRICS_TOKEN in .env}"
            ), name
    assert exposing == 3  # the API, the GPU worker, the CPU workers


def test_the_api_extra_carries_what_the_api_imports_lazily() -> None:
    """The API image installs only the `api` extra: strict mode's token counter needs
    tokenizers there (a 500 in the image otherwise)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    api_packages = {re.split(r"[<>=~\[]", dep)[0] for dep in extras["api"]}
    assert "import tokenizers" in (ROOT / "api" / "token_counter.py").read_text().replace(
        "from tokenizers import", "import tokenizers"
    )
    assert "tokenizers" in api_packages
    assert "requirements_of.py api " in _dockerfile_stages()["api"]
