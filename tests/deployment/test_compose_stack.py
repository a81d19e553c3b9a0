"""docker-compose.yml, run for real: every image built from this repository (plus local stand-ins
for the third-party images), the stack started by podman-compose from the compose file itself,
then driven as a user drives it through the published ports: jobs, search, the OpenAI client,
a scaled fleet that loses a worker and its database mid-job, down and up again, Prometheus and
Flower, and a worker joining from another network. Everything is torn down, even on failure."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from openai import OpenAI

from ops.devstack.bundled_model import bundled_model_source
from tests.deployment import podman_stack as ps
from tests.unit.test_deployment_files import _metric_names

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(2400)]

SERVICES = (
    "postgres",
    "valkey",
    "migrate",
    "export-model-cpu",
    "api",
    "worker-cpu",
    "prometheus",
    "flower",
)
MODEL_DIR = "/models/all-minilm-l6-v2"
COLLECTION = "deploy_docs"
REMOTE_NETWORK = f"{ps.PROJECT}-otherhost"
REMOTE_WORKER = f"{ps.PROJECT}-remote-worker"
WORDS = ["月亮", "代表", "我的", "心", "river", "mountain", "城市", "夜晚", "music", "春天", "海边"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float, logs: Callable[[], str]) -> Any:
    """Poll probe until it returns something truthy; fail with the services' logs."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (httpx.HTTPError, RuntimeError, KeyError, IndexError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"{what} not reached in {timeout_s:g} s (last: {last!r})\n{logs()}")


def texts(prefix: str, count: int) -> list[dict[str, str]]:
    return [
        {
            "id": f"{prefix}-{i}",
            "text": " ".join(WORDS[(i + k * 7) % len(WORDS)] for k in range(3 + i % 9))
            + f" {prefix} {i}",
        }
        for i in range(count)
    ]


@dataclass
class Deployment:
    compose: ps.Compose
    env: dict[str, str]
    api_url: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def logs(self) -> str:
        return "\n".join(
            self.compose.logs(s, 40) for s in ("api", "worker-cpu", "migrate", "export-model-cpu")
        )

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.api_url}{path}", headers=self.auth, timeout=30)

    def submit(self, items: list[dict[str, str]]) -> str:
        response = httpx.post(
            f"{self.api_url}/v1/collections/{COLLECTION}/jobs",
            json={"items": items},
            headers=self.auth,
            timeout=60,
        )
        assert response.status_code == 202, response.text
        job_id: str = response.json()["job_id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/jobs/{job_id}")
        if response.status_code != 200:  # 503 while Postgres restarts: ask again
            raise RuntimeError(f"{response.status_code} {response.text[:200]}")
        body: dict[str, Any] = response.json()
        return body

    def wait_job(self, job_id: str, timeout_s: float = 300) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            body = self.job(job_id)
            return body if body["status"] in ("completed", "failed") else None

        body: dict[str, Any] = wait_for(f"job {job_id} finished", finished, timeout_s, self.logs)
        return body

    def wait_started(self, job_id: str) -> None:
        wait_for(f"job {job_id} under way", lambda: self.job(job_id)["done"] > 0, 120, self.logs)

    def stored_once(self, prefix: str) -> tuple[int, int]:
        """(rows, distinct ids) of the collection's vectors under an id prefix."""
        out = self.compose.psql(
            f"SELECT count(*), count(DISTINCT id) FROM vectors_{COLLECTION} "
            f"WHERE id LIKE '{prefix}-%'"
        )
        rows, distinct = out.split("|")
        return int(rows), int(distinct)

    def wait_workers_ready(self, count: int) -> list[str]:
        """Running worker containers, once count of them log that they consume."""

        def ready() -> list[str] | None:
            running = self.compose.running("worker-cpu")
            consuming = [c for c in running if "worker ready" in ps.container_logs(c)]
            return consuming if len(consuming) >= count else None

        workers: list[str] = wait_for(f"{count} workers consuming", ready, 300, self.logs)
        return workers


def _start(compose: ps.Compose, deployment_env: dict[str, str]) -> tuple[str, str]:
    """up -d, then the API's health, a key made as the README says, and the collection."""
    with ps.TIMES.step("compose up"):
        compose("up", "-d", "--no-deps", *SERVICES, timeout_s=900)
    api_url = f"http://127.0.0.1:{deployment_env['API_PORT']}"

    def healthy() -> bool:
        return httpx.get(f"{api_url}/readyz", timeout=5).status_code == 200

    wait_for("API ready", healthy, 300, lambda: compose.logs("api") + compose.logs("migrate"))
    return api_url, compose.running("api")[0]


def _wait_names_resolve(compose: ps.Compose, container: str) -> None:
    """In one from-scratch run here the first `podman exec` after `up` failed on "Temporary
    failure in name resolution" (the network's DNS server, aardvark-dns 1.4 on Debian 12),
    although the worker had just connected to the database; a rerun passed. Wait until the
    container resolves the database; if it never does, fail saying so."""

    def resolves() -> bool:
        probe = "import socket; socket.getaddrinfo('postgres', 5432)"
        exec_ = ["podman", "exec", container, "python3", "-c", probe]
        try:
            return ps.run(exec_, timeout_s=30, check=False).returncode == 0
        except subprocess.TimeoutExpired:  # a lookup that hangs: try again until the deadline
            return False

    wait_for(f"{container} resolves postgres", resolves, 180, lambda: compose.logs("worker-cpu"))


@pytest.fixture(scope="module")
def deployment(images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    work = tmp_path_factory.mktemp("deployment")
    env_values = {
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "EMBEDQ_APP_DB_ROLE": "embedq_app",
        "EMBEDQ_APP_DB_PASSWORD": secrets.token_hex(16),
        "VALKEY_PASSWORD": secrets.token_hex(16),
        "EMBEDQ_METRICS_TOKEN": secrets.token_hex(16),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(16),
        "FLOWER_BASIC_AUTH": f"ops:{secrets.token_hex(8)}",
        "POSTGRES_IMAGE": ps.standin_image("postgres"),
        "VALKEY_IMAGE": ps.standin_image("valkey"),
        "PROMETHEUS_IMAGE": ps.standin_image("prometheus"),
        "FLOWER_IMAGE": ps.standin_image("flower"),
        "EMBEDQ_IMAGE_PREFIX": ps.IMAGE_PREFIX,
        "EMBEDQ_IMAGE_TAG": "latest",
        "API_PORT": str(_free_port()),
        "PROMETHEUS_PORT": str(_free_port()),
        "FLOWER_PORT": str(_free_port()),
        "MINILM_SOURCE_DIR": str(bundled_model_source()),
        # Smaller tasks than the default 1,024 items, so a 2,000-text job spreads over workers.
        "EMBEDQ_ITEMS_PER_TASK": "100",
    }
    env_file = work / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env_values.items()))
    compose = ps.Compose(
        env_file,
        (ps.ROOT / "docker-compose.yml", ps.HERE / "compose.test.yml"),
        ps.podman_env(),
    )
    _teardown(compose)  # what an interrupted earlier run left
    try:
        api_url, api_container = _start(compose, env_values)
        created = ps.run(
            ["podman", "exec", api_container, "embedq", "keys", "create", "deploytest"]
        ).stdout
        key = created.strip().splitlines()[-1]
        deployment = Deployment(compose, env_values, api_url, key)
        deployment.wait_workers_ready(1)
        worker = compose.running("worker-cpu")[0]
        _wait_names_resolve(compose, worker)
        ps.run(
            [
                "podman",
                "exec",
                worker,
                "embedq",
                "collections",
                "create",
                COLLECTION,
                "--model-dir",
                MODEL_DIR,
            ]
        )
        yield deployment
    finally:
        with ps.TIMES.step("tear down"):
            _teardown(compose)


def _teardown(compose: ps.Compose) -> None:
    ps.run(["podman", "rm", "-f", "-i", REMOTE_WORKER], check=False)
    # A run stopped mid-test may leave workers paused, which `down` cannot stop.
    for container in compose.containers("worker-cpu"):
        ps.run(["podman", "unpause", container], check=False)
    compose("down", "-v", "--remove-orphans", timeout_s=300, check=False)
    ps.run(["podman", "network", "rm", "-f", REMOTE_NETWORK], check=False)
    leftover = compose.containers("postgres") + compose.containers("worker-cpu")
    assert not leftover, f"containers left after down: {leftover}"


def _exit_code(container: str) -> int:
    out = ps.run(["podman", "inspect", "--format", "{{.State.ExitCode}}", container]).stdout
    return int(out.strip())


def test_a_worker_still_waiting_for_its_dependencies_stops_on_sigterm(
    deployment: Deployment,
) -> None:
    """As PID 1 a process ignores a signal it has no handler for: `stop` must end a worker
    that is still waiting at start-up with SIGTERM (exit 143), not SIGKILL after the grace."""
    name = f"{ps.PROJECT}-waiting-worker"
    ps.run(
        [
            *("podman", "run", "-d", "--name", name),
            *("-e", "EMBEDQ_MODEL_DIR=/models/not-exported-yet"),
            *("-e", "DATABASE_URL=postgresql://embedq:x@127.0.0.1:1/embedq"),
            *("-e", "REDIS_URL=redis://127.0.0.1:1/0"),
            ps.our_image("worker-cpu"),
        ]
    )
    try:
        wait_for(
            "the worker waiting for its model",
            lambda: "waiting for the model in /models/not-exported-yet" in ps.container_logs(name),
            60,
            lambda: ps.container_logs(name, 30),
        )
        ps.run(["podman", "stop", "--time", "60", name], timeout_s=120)
        assert _exit_code(name) == 143, ps.container_logs(name, 30)
    finally:
        ps.run(["podman", "rm", "-f", "-i", name], check=False)


def test_one_shots_ran_and_every_service_is_up(deployment: Deployment) -> None:
    compose = deployment.compose
    for one_shot in ("migrate", "export-model-cpu"):
        containers = compose.containers(one_shot)
        assert containers, one_shot
        assert all(_exit_code(c) == 0 for c in containers), compose.logs(one_shot)
    for service in ("postgres", "valkey", "api", "worker-cpu", "prometheus", "flower"):
        assert compose.running(service), f"{service} is not running\n{compose.logs(service)}"
    # The API logs in as the application role, which `migrate` created.
    roles = compose.psql("SELECT usename FROM pg_stat_activity WHERE datname = 'embedq'")
    assert "embedq_app" in roles.split()


def test_two_thousand_texts_are_embedded_searched_and_served_to_the_openai_client(
    deployment: Deployment,
) -> None:
    with ps.TIMES.step("2,000 texts through the API"):
        job_id = deployment.submit(texts("first", 2000))
        body = deployment.wait_job(job_id)
    assert body["status"] == "completed", body
    assert (body["done"], body["failed"]) == (2000, 0)
    assert deployment.stored_once("first") == (2000, 2000)

    query = texts("first", 2000)[1234]["text"]
    response = httpx.post(
        f"{deployment.api_url}/v1/collections/{COLLECTION}/search",
        json={"query": query, "k": 3},
        headers=deployment.auth,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert hits[0]["id"] == "first-1234", hits

    client = OpenAI(base_url=f"{deployment.api_url}/v1", api_key=deployment.key)
    result = client.embeddings.create(model=COLLECTION, input=["月亮代表我的心", "river light"])
    assert [len(d.embedding) for d in result.data] == [384, 384]
    assert result.usage.prompt_tokens > 0


def _worker_holding_a_batch(deployment: Deployment, job_id: str) -> str:
    """The container of a worker that has claimed one of the job's batches and not finished it."""
    hostnames = {
        ps.run(["podman", "inspect", "--format", "{{.Config.Hostname}}", c]).stdout.strip(): c
        for c in deployment.compose.running("worker-cpu")
    }

    def holder() -> str | None:
        claimed = deployment.compose.psql(
            "SELECT claimed_by FROM job_batches WHERE job_id = "
            f"'{job_id}' AND claimed_by IS NOT NULL AND finished_at IS NULL"
        ).split()
        for by in claimed:
            host = by.split(":")[0]
            if host in hostnames:
                return hostnames[host]
        return None

    container: str = wait_for("a claimed batch", holder, 60, deployment.logs)
    return container


def test_a_killed_worker_and_a_restarted_postgres_lose_nothing(deployment: Deployment) -> None:
    compose = deployment.compose
    with ps.TIMES.step("scale worker-cpu to 3"):
        compose("up", "-d", "--no-deps", "--scale", "worker-cpu=3", "worker-cpu", timeout_s=600)
        deployment.wait_workers_ready(3)

    with ps.TIMES.step("job with a worker SIGKILLed mid-job"):
        killed_job = deployment.submit(texts("killed", 2000))
        victim = _worker_holding_a_batch(deployment, killed_job)
        # SIGKILL from the host, as the kernel's OOM killer would: a crash to the engine, so the
        # restart policy applies (`podman kill` would count as stopped by hand).
        pid = ps.run(["podman", "inspect", "--format", "{{.State.Pid}}", victim]).stdout.strip()
        ps.run(["kill", "-KILL", pid])
        body = deployment.wait_job(killed_job)
    assert body["status"] == "completed", body
    assert (body["done"], body["failed"]) == (2000, 0)
    assert deployment.stored_once("killed") == (2000, 2000)
    # `restart: unless-stopped` brought the killed worker back.
    wait_for(
        "the killed worker restarted",
        lambda: (
            int(ps.run(["podman", "inspect", "--format", "{{.RestartCount}}", victim]).stdout) > 0
            and victim in compose.running("worker-cpu")
        ),
        120,
        deployment.logs,
    )

    with ps.TIMES.step("job with Postgres restarted mid-job"):
        restarted_job = deployment.submit(texts("restarted", 2000))
        deployment.wait_started(restarted_job)
        ps.run(["podman", "restart", compose.running("postgres")[0]], timeout_s=300)
        body = deployment.wait_job(restarted_job)
    assert body["status"] == "completed", body
    assert (body["done"], body["failed"]) == (2000, 0)
    assert deployment.stored_once("restarted") == (2000, 2000)
    # Every item of the three jobs was written, and each id is stored once.
    assert compose.psql("SELECT count(*) FROM job_items WHERE status <> 'done'") == "0", (
        compose.psql("SELECT status, error, count(*) FROM job_items GROUP BY 1, 2")
    )


LEGACY_TABLE_SQL = """
CREATE TABLE legacy_songs (id bigint PRIMARY KEY, lyrics text NOT NULL, embedding vector(312));
INSERT INTO legacy_songs
SELECT i, '月亮代表我的心 song ' || i,
       (SELECT array_agg(random()) FROM generate_series(1, 312))::vector(312)
FROM generate_series(1, 300) AS i;
"""


def test_a_live_table_is_re_embedded_by_the_fleet(deployment: Deployment) -> None:
    """A legacy table of 312-d vectors gets the new model's vectors from the containers."""
    compose = deployment.compose
    postgres = compose.running("postgres")[0]
    # The application role owns the table, as the runbook asks of a re-embedded table.
    ps.run(
        [
            *("podman", "exec", postgres, "psql", "-U", "embedq_app", "-d", "embedq"),
            *("-v", "ON_ERROR_STOP=1", "-c", LEGACY_TABLE_SQL),
        ]
    )
    worker = compose.running("worker-cpu")[0]
    with ps.TIMES.step("re-embed a 300-row table"):
        started = ps.run(
            [
                *("podman", "exec", worker, "embedq", "reembed", "start"),
                *("--table", "legacy_songs", "--id", "id", "--text", "lyrics"),
                *("--vector", "embedding", "--model", MODEL_DIR),
            ]
        ).stdout
        assert "started legacy_songs_reembed: 300 rows" in started, started
        wait_for(
            "the backfill done",
            lambda: (
                compose.psql(
                    "SELECT rows_embedded FROM reembed_migrations"
                    " WHERE name = 'legacy_songs_reembed'"
                )
                == "300"
            ),
            300,
            deployment.logs,
        )
    assert compose.psql("SELECT count(*) FROM legacy_songs WHERE embedding_384 IS NULL") == "0"
    norm = compose.psql(
        "SELECT round(min(vector_norm(embedding_384))::numeric, 4) FROM legacy_songs"
    )
    assert norm == "1.0000"


def test_prometheus_scrapes_every_target_and_every_dashboard_metric(
    deployment: Deployment,
) -> None:
    prometheus = f"http://127.0.0.1:{deployment.env['PROMETHEUS_PORT']}"

    def logs() -> str:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]
        states = [
            (t["labels"].get("instance"), t["health"], t.get("lastError"))
            for t in targets["activeTargets"]
        ]
        return f"targets: {states}\n{deployment.compose.logs('prometheus', 20)}"

    def all_up() -> list[dict[str, Any]] | None:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]
        active: list[dict[str, Any]] = targets["activeTargets"]
        workers = [t for t in active if t["labels"]["job"] == "embedq-workers"]
        healthy = all(t["health"] == "up" for t in active)
        return active if healthy and len(workers) >= 3 else None

    # Rare events a panel shows: small jobs coalesced into one engine call (the workers paused
    # while they queue up), and live queries.
    workers = deployment.compose.running("worker-cpu")
    ps.run(["podman", "pause", *workers])
    try:
        small_jobs = [deployment.submit(texts(f"small{n}", 5)) for n in range(12)]
    finally:
        ps.run(["podman", "unpause", *workers])
    for job_id in small_jobs:
        assert deployment.wait_job(job_id)["status"] == "completed"
    client = OpenAI(base_url=f"{deployment.api_url}/v1", api_key=deployment.key)
    for _ in range(len(workers) * 2):
        client.embeddings.create(model=COLLECTION, input="夜晚的城市")

    with ps.TIMES.step("Prometheus: every target up"):
        active = wait_for("every scrape target up", all_up, 120, logs)
    jobs = {t["labels"]["job"] for t in active}
    assert {"embedq-api", "embedq-workers", "prometheus"} <= jobs

    dashboard = json.loads((ps.ROOT / "ops/deploy/grafana/dashboards/embedq.json").read_text())
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queried |= _metric_names(target["expr"])
    # Gauges that exist only during a phase shorter than a scrape here: checked by name only.
    only_while = {
        "embedq_reembed_eta_seconds": "the keyset backfill runs",
        "embedq_reembed_index_done_fraction": "an HNSW index is being built",
    }
    assert set(only_while) <= queried
    queried -= set(only_while)

    def missing() -> set[str]:
        names = httpx.get(f"{prometheus}/api/v1/label/__name__/values", timeout=10).json()
        return queried - set(names["data"])

    wait_for(
        "every dashboard metric in a real scrape",
        lambda: not missing(),
        90,
        lambda: f"missing: {sorted(missing())}",
    )


def test_flower_lists_the_workers(deployment: Deployment) -> None:
    user, password = deployment.env["FLOWER_BASIC_AUTH"].split(":")
    url = f"http://127.0.0.1:{deployment.env['FLOWER_PORT']}/api/workers?refresh=true"
    hostnames = {
        ps.run(["podman", "inspect", "--format", "{{.Config.Hostname}}", c]).stdout.strip()
        for c in deployment.compose.running("worker-cpu")
    }

    def listed() -> set[str] | None:
        workers = httpx.get(url, auth=(user, password), timeout=30).json()
        seen = {name.split("@", 1)[1] for name in workers}
        return seen if hostnames <= seen else None

    wait_for("Flower lists every worker", listed, 120, lambda: deployment.compose.logs("flower"))
    assert httpx.get(url, timeout=10).status_code == 401


def test_a_worker_on_another_host_joins_the_fleet(deployment: Deployment) -> None:
    """A container on its own network that reaches only Postgres and Valkey, started as the
    deployment docs tell a user to add a worker host, takes every batch while the compose
    workers are stopped."""
    compose = deployment.compose
    env = deployment.env
    ps.run(["podman", "network", "create", REMOTE_NETWORK])
    for service in ("postgres", "valkey"):
        ps.run(
            [
                "podman",
                "network",
                "connect",
                "--alias",
                f"{service}.db-host",
                REMOTE_NETWORK,
                compose.running(service)[0],
            ]
        )
    with ps.TIMES.step("worker on another host"):
        ps.run(
            [
                "podman",
                "run",
                "-d",
                "--name",
                REMOTE_WORKER,
                "--hostname",
                "gpu-box-1",
                "--network",
                REMOTE_NETWORK,
                "-e",
                f"DATABASE_URL=postgresql://embedq_app:{env['EMBEDQ_APP_DB_PASSWORD']}"
                "@postgres.db-host:5432/embedq",
                "-e",
                f"REDIS_URL=redis://:{env['VALKEY_PASSWORD']}@valkey.db-host:6379/0",
                "-e",
                f"EMBEDQ_MODEL_DIR={MODEL_DIR}",
                "-v",
                f"{ps.PROJECT}_models:/models:ro",
                ps.our_image("worker-cpu"),
            ]
        )
        wait_for(
            "the remote worker consuming",
            lambda: "worker ready" in ps.container_logs(REMOTE_WORKER),
            180,
            lambda: ps.container_logs(REMOTE_WORKER, 60),
        )
        # It reaches nothing else: the API is not on its network.
        probe = ps.run(
            [
                "podman",
                "exec",
                REMOTE_WORKER,
                "python3",
                "-c",
                "import socket; socket.create_connection(('api', 8000), timeout=3)",
            ],
            check=False,
        )
        assert probe.returncode != 0
        # Stopped, not paused: a paused worker still holds the message it prefetched.
        local = compose.running("worker-cpu")
        ps.run(["podman", "stop", *local], timeout_s=300)
        try:
            job_id = deployment.submit(texts("remote", 300))
            body = deployment.wait_job(job_id, timeout_s=180)
        finally:
            ps.run(["podman", "start", *local], timeout_s=300)
    assert body["status"] == "completed", body
    claimed = compose.psql(
        f"SELECT DISTINCT split_part(claimed_by, ':', 1) FROM job_batches WHERE job_id = '{job_id}'"
    )
    assert claimed.split() == ["gpu-box-1"]


def test_down_and_up_keeps_vectors_jobs_and_keys(deployment: Deployment) -> None:
    compose = deployment.compose
    before = compose.psql(f"SELECT count(*) FROM vectors_{COLLECTION}")
    jobs_before = compose.psql("SELECT id FROM jobs ORDER BY created_at").split()
    assert int(before) >= 6000 and len(jobs_before) >= 3
    with ps.TIMES.step("compose down (volumes kept)"):
        compose("down", timeout_s=300)
    assert not compose.running("postgres")
    _start(compose, deployment.env)
    assert compose.psql(f"SELECT count(*) FROM vectors_{COLLECTION}") == before
    for job_id in jobs_before:  # the same key still works, and every job is still completed
        assert deployment.job(job_id)["status"] == "completed"
    deployment.wait_workers_ready(1)
    job_id = deployment.submit(texts("after-restart", 50))
    assert deployment.wait_job(job_id)["status"] == "completed"
