"""The API process imports no ML library (that is what keeps its start fast)."""

from __future__ import annotations

import subprocess
import sys

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
