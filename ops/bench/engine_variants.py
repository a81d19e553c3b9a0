"""One benchmark variant, run in its own process so its peak memory is its own.

python -m ops.bench.engine_variants VARIANT --corpus NAME=FILE ... --threads N ...
prints one JSON line: per corpus the first and the best timed pass (seconds), the backend and
the process's peak RSS; writes each corpus's vectors to OUT_DIR/NAME.npy.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ops.bench.peers import PEERS, Embed, sentence_transformers_peer
from ops.bench.process_memory import peak_rss_mb
from workers.engine.config import EngineConfig

# First-call allocations are not throughput; a few batches' worth of texts warm them, and a
# sweep's large batches (hundreds of texts) need no more than that.
WARMUP_TEXTS_MAX = 64

# Our variants: (model: fp32|int8, runtime, hardware override, engine step).
OURS: dict[str, tuple[str, str, str | None, str | None]] = {
    "ours-ort-fp32": ("fp32", "onnxruntime-cpu", None, None),
    "ours-ov-fp32": ("fp32", "openvino", "no-bf16", None),
    "ours-ov-bf16": ("fp32", "openvino", None, None),
    "ours-ov-int8": ("int8", "openvino", None, None),
    "ours-ov-int8-pad16": ("int8", "openvino", None, "pad16"),
    "ours-ov-int8-2streams": ("int8", "openvino", None, "2streams"),
    "ours-ov-bf16-pad16": ("fp32", "openvino", None, "pad16"),
    "ours-ov-bf16-2streams": ("fp32", "openvino", None, "2streams"),
}


def _ours(variant: str, fp32_dir: Path, int8_dir: Path, config: EngineConfig) -> tuple[Embed, str]:
    from embedq_core.manifest import ModelManifest
    from ops.bench.engine_steps import PaddedSession
    from workers.engine import Embedder
    from workers.engine.backend_choice import choose_backend
    from workers.engine.hardware import detect_hardware
    from workers.engine.runtime import open_session
    from workers.engine.tokenize import TextTokenizer

    which, runtime, hardware_override, step = OURS[variant]
    model_dir = int8_dir if which == "int8" else fp32_dir
    config = replace(config, runtime=runtime)  # type: ignore[arg-type]  # OURS holds literals
    hardware = detect_hardware()
    if hardware_override == "no-bf16":  # OpenVINO at FP32 precision, whatever the CPU has
        hardware = replace(hardware, cpu_has_amx_bf16=False, cpu_has_avx512_bf16=False)
    manifest = ModelManifest.read(model_dir)
    backend = choose_backend(config.runtime, manifest, hardware)
    label: str = backend.kind
    if step == "2streams":
        config, label = replace(config, streams=2), f"{backend.kind}, 2 streams"
    session = open_session(
        model_dir / manifest.onnx_file,
        backend,
        config.intra_op_threads,
        config.streams,
        manifest.output_name,
        (manifest.sparse_output_name,) if manifest.sparse_output_name else (),
    )
    if step == "pad16":
        session, label = PaddedSession(session, multiple=16), f"{backend.kind}, pad to 16"
    tokenizer = TextTokenizer(model_dir / "tokenizer.json", manifest.max_length)
    embedder = Embedder(manifest, tokenizer, session, config)
    return (lambda texts: embedder.embed(texts).vectors), label


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", choices=[*PEERS, *OURS])
    parser.add_argument("--corpus", action="append", required=True, help="NAME=texts.json")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--int8-dir", type=Path, required=True)
    parser.add_argument("--source-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--max-batch-tokens", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--warmup-texts",
        type=int,
        default=None,
        help=f"default: --batch-size, at most {WARMUP_TEXTS_MAX}",
    )
    args = parser.parse_args()
    if args.variant in PEERS:
        embed, backend = sentence_transformers_peer(
            args.variant, args.source_dir, args.threads, args.batch_size
        )
    else:
        config = EngineConfig(
            runtime="auto",
            intra_op_threads=args.threads,
            streams=1,
            max_batch_tokens=args.max_batch_tokens,
            max_batch_size=args.batch_size,
            max_preemptions_per_batch=0,  # no live queries in this bench
        )
        embed, backend = _ours(args.variant, args.model_dir, args.int8_dir, config)
    corpora: dict[str, Any] = {}
    for item in args.corpus:
        name, _, path = item.partition("=")
        texts: list[str] = json.loads(Path(path).read_text(encoding="utf-8"))
        warmup = (
            min(args.batch_size, WARMUP_TEXTS_MAX)
            if args.warmup_texts is None
            else args.warmup_texts
        )
        if warmup > 0:  # warm-up: first-call allocations are not throughput
            embed(texts[:warmup])
        passes: list[float] = []
        vectors = None
        for _ in range(args.repeats):
            started = time.perf_counter()
            vectors = embed(texts)
            passes.append(time.perf_counter() - started)
        assert vectors is not None
        np.save(args.out_dir / f"{name}.npy", vectors)
        corpora[name] = {"first_s": passes[0], "best_s": min(passes)}
    print(json.dumps({"backend": backend, "corpora": corpora, "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
