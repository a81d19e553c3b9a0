"""The API process imports no ML library (that is what keeps its start fast)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import sys
from embedq_core.settings import Settings
from api.main import create_app
app = create_app(Settings(database_url="postgresql://u@localhost/x", redis_url="redis://localhost:1/0"))
heavy = sorted(m for m in ("torch", "transformers", "onnxruntime", "optimum", "tokenizers",
                           "sentence_transformers", "openvino") if m in sys.modules)
print(heavy, len(app.routes))
"""


def test_api_imports_no_ml_library() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    heavy, route_count = out[0], int(out[1])
    assert heavy == "[]"
    assert route_count > 4


WORKER_PROBE = """
import sys
from pathlib import Path
from embedq_core.settings import Settings
from workers.context import WorkerContext
from workers.celery_app import build_worker_app
settings = Settings(database_url="postgresql://u@localhost/x", redis_url="redis://localhost:1/0",
                    model_dir=Path(sys.argv[1]))
ctx = WorkerContext.load(settings)  # loads and warms the model, as a worker does at start
build_worker_app(ctx)
heavy = sorted(m for m in ("torch", "transformers", "optimum", "sentence_transformers")
               if m in sys.modules)
print(heavy, ctx.embedder.backend)
"""


def test_worker_loads_its_model_without_torch_or_transformers(minilm_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", WORKER_PROBE, str(minilm_dir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == "[]"
    assert out[1] in {"openvino-bf16", "openvino-fp32", "onnxruntime-cpu", "onnxruntime-cuda"}


def test_the_embedq_command_imports_neither_process_at_start() -> None:
    """The API image carries no worker code and the worker images no API code, and both run
    `embedq`: loading its commands must import neither package (each command imports what it
    runs when it runs)."""
    probe = (
        "import sys, ops.cli.main; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'api', 'workers'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
