"""infinity-emb's optimum engine on the bench texts, for `embedq bench engine`.

Run with an interpreter that has infinity-emb installed (it pins numpy<2, so it lives in a
venv of its own); needs only the standard library, numpy and infinity_emb.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _model_repo(source_dir: Path, fp32_onnx: Path, work: Path) -> Path:
    """A directory shaped like a hub repo that ships ONNX files, as infinity's optimum engine
    expects: the HF files, model.onnx and a dynamically quantised model_quantized.onnx (infinity
    prefers a file named *quantize* on CPU; at the repo root, because this infinity release and
    optimum 2 disagree on how a file in a subfolder is named)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    repo = work / "repo"
    repo.mkdir(parents=True)
    for path in source_dir.iterdir():
        (repo / path.name).symlink_to(path)
    (repo / "model.onnx").symlink_to(fp32_onnx)
    quantize_dynamic(
        fp32_onnx,
        repo / "model_quantized.onnx",
        per_channel=True,
        weight_type=QuantType.QInt8,
    )
    return repo


async def _run(args: argparse.Namespace, texts: list[str]) -> tuple[float, np.ndarray]:
    from infinity_emb import AsyncEmbeddingEngine, EngineArgs

    engine = AsyncEmbeddingEngine.from_args(
        EngineArgs(
            model_name_or_path=".",
            engine="optimum",
            pooling_method=args.pooling,
            device="cpu",
            batch_size=args.batch_size,
            model_warmup=True,
        )
    )
    async with engine:
        await engine.embed(sentences=texts[: args.batch_size])
        best = float("inf")
        vectors = None
        for _ in range(2):
            started = time.perf_counter()
            embeddings, _usage = await engine.embed(sentences=texts)
            best = min(best, time.perf_counter() - started)
            vectors = np.asarray(embeddings, dtype=np.float32)
    assert vectors is not None
    return best, vectors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=Path, required=True)
    parser.add_argument("--out-npy", type=Path, required=True)
    parser.add_argument("--source-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--fp32-onnx", type=Path, required=True)
    parser.add_argument("--pooling", choices=["mean", "cls"], required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    texts = json.loads(args.texts.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as work:
        os.chdir(_model_repo(args.source_dir, args.fp32_onnx, Path(work)))
        seconds, vectors = asyncio.run(_run(args, texts))
    np.save(args.out_npy, vectors)
    # VmHWM, not ru_maxrss (which carries the parent's peak through fork and exec); read here,
    # not through ops.bench.process_memory: this script runs outside the project's environment.
    hwm = [
        ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:")
    ]
    peak_rss_mb = int(hwm[0].split()[1]) / 1024
    print(
        json.dumps({"seconds": seconds, "backend": "infinity-optimum", "peak_rss_mb": peak_rss_mb})
    )


if __name__ == "__main__":
    main()
