"""One benchmark variant, run in its own process so its peak memory is its own.

python -m ops.bench.engine_variants VARIANT --texts F --out-npy F --threads N ...
prints one JSON line: seconds (best of the timed passes), backend, padding ratio, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from workers.engine.backend_choice import RuntimeChoice
from workers.engine.config import EngineConfig

FloatArray = npt.NDArray[np.float32]


def _engine(model_dir: Path, config: EngineConfig) -> tuple[Callable[[list[str]], FloatArray], str]:
    from workers.engine import Embedder

    embedder = Embedder.from_model_dir(model_dir, config)
    return (lambda texts: embedder.embed(texts).vectors), embedder.backend


def _torch_eager(
    source_dir: Path, model_dir: Path, threads: int, batch_size: int
) -> tuple[Callable[[list[str]], FloatArray], str]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from embedq_core.manifest import ModelManifest

    torch.set_num_threads(threads)
    manifest = ModelManifest.read(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(source_dir)  # type: ignore[no-untyped-call]
    model = AutoModel.from_pretrained(source_dir).eval()

    def embed(texts: list[str]) -> FloatArray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), manifest.dimension), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = tokenizer(
                    [texts[i] for i in chunk],
                    padding=True,
                    truncation=True,
                    max_length=manifest.max_length,
                    return_tensors="pt",
                )
                hidden = model(**batch).last_hidden_state
                if manifest.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).float()
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[chunk] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out

    return embed, "torch-eager-fp32"


def _sentence_transformers(
    source_dir: Path, threads: int, batch_size: int
) -> tuple[Callable[[list[str]], FloatArray], str]:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(source_dir), device="cpu")

    def embed(texts: list[str]) -> FloatArray:
        vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)

    return embed, "sentence-transformers"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variant")
    parser.add_argument("--texts", type=Path, required=True)
    parser.add_argument("--out-npy", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--int8-dir", type=Path)
    parser.add_argument("--source-dir", type=Path)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--max-batch-tokens", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    texts: list[str] = json.loads(args.texts.read_text(encoding="utf-8"))

    def ours(runtime: RuntimeChoice) -> EngineConfig:
        """The parent's engine config, passed field by field, on this variant's runtime."""
        return EngineConfig(
            runtime=runtime,
            intra_op_threads=args.threads,
            max_batch_tokens=args.max_batch_tokens,
            max_batch_size=args.batch_size,
        )

    runner: tuple[Callable[[list[str]], FloatArray], str]
    if args.variant == "torch-eager":
        runner = _torch_eager(args.source_dir, args.model_dir, args.threads, args.batch_size)
    elif args.variant == "sentence-transformers":
        runner = _sentence_transformers(args.source_dir, args.threads, args.batch_size)
    elif args.variant == "int8":
        runner = _engine(args.int8_dir, ours("onnxruntime-cpu"))
    elif args.variant in ("onnxruntime-cpu", "openvino", "auto"):  # our engine on FP32
        runner = _engine(args.model_dir, ours(args.variant))
    else:
        raise SystemExit(f"unknown variant {args.variant}")
    embed, backend = runner
    embed(texts[: args.batch_size])  # warm-up: first-call allocations are not throughput
    best_s = float("inf")
    vectors: FloatArray | None = None
    for _ in range(args.repeats):
        started = time.perf_counter()
        vectors = embed(texts)
        best_s = min(best_s, time.perf_counter() - started)
    assert vectors is not None
    np.save(args.out_npy, vectors)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result: dict[str, Any] = {"seconds": best_s, "backend": backend, "peak_rss_mb": peak_rss_mb}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
