"""One rerank benchmark variant in its own process (its peak memory is its own).

python -m ops.bench.rerank_child VARIANT --fp32-dir D --int8-dir I --source-dir S
    --pairs FILE --threads N --batch-size B --repeats R
prints one JSON line: per length the best timed pass (seconds), the logits, the backend and the
process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ops.bench.process_memory import peak_rss_mb

Score = Callable[[str, list[str]], list[float]]

OURS = {
    "ours-ort-fp32": "onnxruntime-cpu",
    "ours-ov-fp32": "openvino",
    "ours-ov-bf16": "openvino",
    "ours-ov-int8": "openvino",
}
PEERS = ("st-ce-torch-fp32", "st-ce-torch-bf16", "st-ce-onnx", "st-ce-openvino")


def _ours(variant: str, model_dir: Path, threads: int, batch_size: int) -> tuple[Score, str]:
    from embedq_core.settings import Settings
    from workers.engine import EngineConfig, Reranker
    from workers.engine.hardware import detect_hardware

    config = replace(
        EngineConfig.from_settings(Settings()),
        runtime=OURS[variant],  # type: ignore[arg-type]  # OURS holds literals
        intra_op_threads=threads,
        streams=1,
        max_batch_size=batch_size,
    )
    hardware = detect_hardware()
    if variant == "ours-ov-fp32":  # OpenVINO at FP32 precision, whatever the CPU has
        hardware = replace(hardware, cpu_has_amx_bf16=False, cpu_has_avx512_bf16=False)
    reranker = Reranker.from_model_dir(model_dir, config, hardware)

    def score(query: str, passages: list[str]) -> list[float]:
        return [float(x) for x in reranker.score(query, passages).logits]

    return score, reranker.backend


def _peer(variant: str, source_dir: Path, threads: int, batch_size: int) -> tuple[Score, str]:
    import torch
    from sentence_transformers import CrossEncoder

    from ops.bench.peers import peer_loading

    kwargs, model_dir = peer_loading(variant.removeprefix("st-ce-"), source_dir, threads)
    model = CrossEncoder(str(model_dir), device="cpu", **kwargs)

    def score(query: str, passages: list[str]) -> list[float]:
        logits = model.predict(
            [(query, p) for p in passages],
            batch_size=batch_size,
            activation_fn=torch.nn.Identity(),
            convert_to_numpy=True,
        )
        return [float(x) for x in np.asarray(logits, dtype=np.float32).reshape(-1)]

    return score, variant


def main() -> None:
    """Run one variant over every length's pairs and print the JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("variant")
    parser.add_argument("--fp32-dir", type=Path, required=True)
    parser.add_argument("--int8-dir", type=Path, required=True)
    parser.add_argument("--source-dir", type=Path, required=True)
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--repeats", type=int, required=True)
    args = parser.parse_args()
    corpora: dict[str, dict[str, Any]] = json.loads(args.pairs.read_text(encoding="utf-8"))
    if args.variant in OURS:
        model_dir = args.int8_dir if args.variant == "ours-ov-int8" else args.fp32_dir
        score, backend = _ours(args.variant, model_dir, args.threads, args.batch_size)
    else:
        score, backend = _peer(args.variant, args.source_dir, args.threads, args.batch_size)
    out: dict[str, Any] = {"backend": backend, "lengths": {}}
    for name, corpus in corpora.items():
        query, passages = corpus["query"], corpus["passages"]
        score(query, passages[:2])  # warm-up: this input shape's first run
        best, logits = float("inf"), []
        for _ in range(args.repeats):
            started = time.perf_counter()
            logits = score(query, passages)
            best = min(best, time.perf_counter() - started)
        out["lengths"][name] = {"seconds": best, "logits": logits}
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
