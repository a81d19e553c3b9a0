"""Build this repository's images and run docker-compose.yml for real under podman and
podman-compose, as the deployment tests do. No image registry is reachable here, so the base
image is built with debootstrap and the third-party services (Postgres + pgvector, Valkey,
Prometheus, Flower) are local stand-ins built from Debian's packages and PyPI wheels."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STANDINS = HERE / "standins"
# runc, cgroupfs and lowered ulimits: crun refuses these machines' hybrid cgroups and rlimits.
CONTAINERS_CONF = HERE / "containers.conf"
PROJECT = "embedq-deploytest"
IMAGE_PREFIX = f"localhost/{PROJECT}"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
APT_TOOLS = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap"}


@dataclass
class StepTimes:
    """Wall time of each deployment step, printed at the end of the run. A step that ran beside
    others (one image build among several) is shown but not added to the total: the step that
    holds them counts their wall time once."""

    steps: list[tuple[str, float, bool]] = field(default_factory=list)

    @contextmanager
    def step(self, name: str, beside_others: bool = False) -> Iterator[None]:
        started = time.monotonic()
        print(f"[deployment] {name} ...", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            took_s = time.monotonic() - started
            self.steps.append((name, took_s, beside_others))
            print(f"[deployment] {name}: {took_s:.1f} s", file=sys.stderr, flush=True)


TIMES = StepTimes()


def podman_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF), **extra}


def run(
    args: Sequence[str],
    timeout_s: float = 600,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with the tail of its output."""
    done = subprocess.run(
        list(args),
        cwd=cwd,
        env=env or podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check and done.returncode != 0:
        tail = (done.stdout[-3000:] + "\n" + done.stderr[-6000:]).strip()
        raise RuntimeError(f"{' '.join(args[:6])} ... exited {done.returncode}:\n{tail}")
    return done


def ensure_tools() -> None:
    """podman, runc and debootstrap from Debian's packages when missing (as root), else say
    what to install; podman-compose comes with the test extra."""
    missing = [package for tool, package in APT_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise RuntimeError(
                f"the deployment tests need {', '.join(missing)}: "
                f"apt-get install {' '.join(missing)} (as root)"
            )
        run(["apt-get", "update", "-qq"], timeout_s=600)
        run(
            ["apt-get", "install", "-y", "-qq", *missing],
            timeout_s=900,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    if shutil.which("podman-compose") is None:
        raise RuntimeError("podman-compose is missing: pip install -e '.[test]'")


def image_exists(tag: str) -> bool:
    return run(["podman", "image", "exists", tag], check=False).returncode == 0


def base_image() -> str:
    """A Debian image with python3 and venv, built with debootstrap (once per recipe)."""
    recipe = f"{DEBIAN_SUITE} {DEBIAN_MIRROR} {' '.join(BASE_PACKAGES)}"
    tag = f"{IMAGE_PREFIX}/debian-python:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if image_exists(tag):
        print(f"[deployment] reusing base image {tag}", file=sys.stderr, flush=True)
        return tag
    with TIMES.step("base image (debootstrap)"), tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            timeout_s=900,
        )
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "import", "-", tag],
            stdin=tar.stdout,
            env=podman_env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise RuntimeError(f"podman import failed: {imported.stderr[-2000:]}")
    return tag


def _pip_config() -> dict[str, str]:
    listed = run([sys.executable, "-m", "pip", "config", "list"], env=dict(os.environ)).stdout
    found = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        found[key.split(".")[-1]] = value.strip().strip("'\"")
    return found


@dataclass(frozen=True)
class BuildMounts:
    """What a build on this machine needs from it: the CA bundle that reaches PyPI (pip is
    configured with one here) and local wheel folders (the CPU build of torch), handed to pip
    through a pip.conf mounted at /etc/pip.conf, as a site would pass its mirror's settings."""

    args: tuple[str, ...]

    @classmethod
    def from_this_machine(cls, workdir: Path) -> BuildMounts:
        config = _pip_config()
        lines = ["[global]"]
        volumes: list[str] = []
        cert = config.get("cert")
        if cert and Path(cert).is_file():
            lines.append(f"cert = {cert}")
            volumes.append(f"{cert}:{cert}:ro")
        links = [p for p in config.get("find-links", "").split() if Path(p).is_dir()]
        if links:
            lines.append(f"find-links = {' '.join(links)}")
            volumes += [f"{p}:{p}:ro" for p in links]
        pip_conf = workdir / "pip.conf"
        pip_conf.write_text("\n".join(lines) + "\n")
        volumes.append(f"{pip_conf}:/etc/pip.conf:ro")
        return cls(tuple(arg for volume in volumes for arg in ("--volume", volume)))


def build(
    tag: str,
    context: Path,
    mounts: BuildMounts,
    build_args: dict[str, str],
    dockerfile: Path | None = None,
    target: str | None = None,
    beside_others: bool = False,
) -> None:
    """podman build, with this machine's pip settings mounted."""
    args = ["podman", "build", "--tag", tag, *mounts.args]
    for name, value in build_args.items():
        args += ["--build-arg", f"{name}={value}"]
    if dockerfile is not None:
        args += ["--file", str(dockerfile)]
    if target is not None:
        args += ["--target", target]
    with TIMES.step(f"build {tag.rsplit('/', 1)[-1]}", beside_others):
        run([*args, str(context)], timeout_s=1500)


def our_image(target: str) -> str:
    return f"{IMAGE_PREFIX}-{target}:latest"


def standin_image(name: str) -> str:
    return f"{IMAGE_PREFIX}/standin-{name}:latest"


# Our Dockerfile's targets and the stand-ins, largest build first so that the long ones start at
# once and the short ones fill in beside them.
OUR_TARGETS = ("worker-gpu", "export", "worker-cpu", "api")
STANDIN_NAMES = ("prometheus", "flower", "postgres", "valkey")
# Builds at a time: each spends much of its time waiting on PyPI, so a 2-core machine runs
# three side by side in well under the time it needs for them one after another.
PARALLEL_BUILDS = 3


def build_all(base: str, mounts: BuildMounts) -> None:
    """Every image the deployment tests run: our targets and the stand-ins, a few at a time."""
    dockerfile = ROOT / "ops" / "deploy" / "docker" / "Dockerfile"
    # The export image takes torch's CPU build from the mounted wheel folder instead of
    # PyTorch's index (unreachable here).
    ours = {"PYTHON_IMAGE": base, "TORCH_INDEX_URL": ""}
    builds = [(our_image(t), ROOT, ours, dockerfile, t) for t in OUR_TARGETS] + [
        (standin_image(n), STANDINS / n, {"BASE_IMAGE": base}, None, None) for n in STANDIN_NAMES
    ]
    with (
        TIMES.step(f"build {len(builds)} images, {PARALLEL_BUILDS} at a time"),
        ThreadPoolExecutor(PARALLEL_BUILDS) as pool,
    ):
        futures = [
            pool.submit(build, tag, context, mounts, args, dockerfile, target, True)
            for tag, context, args, dockerfile, target in builds
        ]
        for future in futures:
            future.result()  # the first failure, with its output


@dataclass
class Compose:
    """podman-compose on docker-compose.yml (+ overrides) with one .env and project name."""

    env_file: Path
    files: tuple[Path, ...]
    env: dict[str, str]

    def __call__(self, *args: str, timeout_s: float = 600, check: bool = True) -> str:
        command = ["podman-compose", "-p", PROJECT, "--env-file", str(self.env_file)]
        for path in self.files:
            command += ["-f", str(path)]
        done = run([*command, "--profile", "cpu", *args], timeout_s, check, self.env)
        return done.stdout

    def containers(self, service: str) -> list[str]:
        """Names of the service's containers, running or not."""
        out = run(
            [
                "podman",
                "ps",
                "-a",
                "--filter",
                f"label=io.podman.compose.project={PROJECT}",
                "--filter",
                f"label=com.docker.compose.service={service}",
                "--format",
                "json",
            ],
            env=self.env,
        ).stdout
        return sorted(name for c in json.loads(out or "[]") for name in c["Names"])

    def running(self, service: str) -> list[str]:
        out = run(
            [
                "podman",
                "ps",
                "--filter",
                f"label=io.podman.compose.project={PROJECT}",
                "--filter",
                f"label=com.docker.compose.service={service}",
                "--format",
                "{{.Names}}",
            ],
            env=self.env,
        ).stdout
        return sorted(out.split())

    def psql(self, sql: str) -> str:
        """One statement as the Postgres superuser, inside the postgres container."""
        container = self.running("postgres")[0]
        done = run(
            ["podman", "exec", container, "psql", "-U", "postgres", "-d", "embedq", "-Atc", sql],
            env=self.env,
        )
        return done.stdout.strip()

    def logs(self, service: str, lines: int = 60) -> str:
        return "\n".join(
            f"--- {container}\n{container_logs(container, lines)}"
            for container in self.containers(service)
        )


def container_logs(container: str, lines: int | None = None) -> str:
    """What a container wrote, stdout and stderr together."""
    tail = ["--tail", str(lines)] if lines else []
    done = run(["podman", "logs", *tail, container], check=False)
    return done.stdout + done.stderr
