"""The worker-gpu image, built here without a CUDA base image: onnxruntime-gpu and NVIDIA's CUDA
and cuDNN runtime wheels come from PyPI, the driver from the host. This machine has no GPU, so
the image must offer the CUDA provider and a worker started in it must refuse to run, at once
and saying why, instead of embedding on the CPU. A real GPU run is not made here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deployment import podman_stack as ps

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def gpu_image(images: None) -> str:
    return ps.our_image("worker-gpu")


def test_the_gpu_image_offers_cuda_and_carries_no_torch(gpu_image: str) -> None:
    probe = (
        "import importlib.util, onnxruntime as ort; "
        "print(ort.__version__, ort.get_available_providers(), "
        "importlib.util.find_spec('torch') is not None, "
        "importlib.util.find_spec('nvidia.cudnn') is not None)"
    )
    out = ps.run(["podman", "run", "--rm", gpu_image, "python3", "-c", probe]).stdout
    assert "CUDAExecutionProvider" in out, out
    # No torch; cuDNN came as a wheel.
    assert out.strip().endswith("False True"), out
    user = ps.run(["podman", "run", "--rm", gpu_image, "id", "-un"]).stdout.strip()
    assert user == "embedq"


def test_a_gpu_worker_without_a_gpu_exits_at_once_saying_so(
    gpu_image: str, minilm_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(minilm_dir, model)
    for path in [model, *model.rglob("*")]:  # readable by the image's unprivileged user
        path.chmod(0o755 if path.is_dir() else 0o644)
    done = ps.run(
        [
            "podman",
            "run",
            "--rm",
            "-v",
            f"{model}:/models/m:ro",
            "-e",
            "EMBEDQ_MODEL_DIR=/models/m",
            "-e",
            "EMBEDQ_RUNTIME=onnxruntime-cuda",
            # Nothing listens there: the worker must stop before it would wait for them.
            "-e",
            "DATABASE_URL=postgresql://embedq:x@127.0.0.1:1/embedq",
            "-e",
            "REDIS_URL=redis://127.0.0.1:1/0",
            gpu_image,
        ],
        check=False,
        timeout_s=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "no usable GPU" in output, output[-3000:]
    # It stopped at the model load: it neither embedded on the CPU nor waited for Postgres.
    assert "waiting for" not in output
    assert "worker ready" not in output
