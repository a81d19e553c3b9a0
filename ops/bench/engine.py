"""`embedq bench engine`: the engine's backends against torch, sentence-transformers and
infinity-emb on the same texts, in one run. Prints a table, writes JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from embedq_core.manifest import ModelManifest
from ops.corpus import load_bench_corpus
from ops.fidelity import fidelity
from workers.engine.batching import padding_ratio, plan_batches
from workers.engine.config import EngineConfig
from workers.engine.hardware import cpu_flags
from workers.engine.tokenize import TextTokenizer

# (label, child variant); the reference for fidelity is the first row.
VARIANTS = [
    ("torch eager FP32 (reference)", "torch-eager"),
    ("sentence-transformers encode()", "sentence-transformers"),
    ("ours: ONNX Runtime FP32", "onnxruntime-cpu"),
    ("ours: ONNX Runtime INT8 (static)", "int8"),
    ("ours: OpenVINO", "openvino"),
    ("ours: default backend (auto)", "auto"),
]
INFINITY_LABEL = "infinity-emb optimum"


@dataclass
class VariantResult:
    """One row of the table."""

    label: str
    backend: str
    texts_per_s: float
    tokens_per_s: float
    padding_ratio: float | None
    peak_rss_mb: float
    mean_cos: float | None
    min_cos: float | None
    recall_at_10: float | None


def machine_description() -> dict[str, Any]:
    """The machine the figures were measured on."""
    model_name = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model_name = line.partition(":")[2].strip()
                break
    return {
        "cpu": model_name,
        "cores": os.cpu_count(),
        "amx_bf16": "amx_bf16" in cpu_flags(),
        "python": platform.python_version(),
    }


def _run_child(command: list[str]) -> dict[str, Any]:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed:\n{result.stderr[-3000:]}")
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def run_engine_bench(
    model_dir: Path,
    int8_dir: Path,
    source_dir: Path,
    engine: EngineConfig,
    out_json: Path,
    infinity_python: Path | None,
    console: Console,
    limit: int | None = None,
) -> list[VariantResult]:
    """Run every variant on the bench corpus and report throughput, memory and fidelity.
    `engine` gives every variant its threads and batch size, and our engine its token budget;
    each variant of ours replaces only the runtime."""
    threads, batch_size = engine.intra_op_threads, engine.max_batch_size
    max_batch_tokens = engine.max_batch_tokens
    manifest = ModelManifest.read(model_dir)
    texts = [text for _, text in load_bench_corpus()][:limit]
    tokenized = TextTokenizer(model_dir / "tokenizer.json", manifest.max_length).tokenize(texts)
    lengths = [len(t.ids) for t in tokenized]
    total_tokens = sum(lengths)
    ours_padding = padding_ratio(lengths, plan_batches(lengths, max_batch_tokens, batch_size))
    by_chars = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    count_batches = [by_chars[i : i + batch_size] for i in range(0, len(by_chars), batch_size)]
    count_padding = padding_ratio(lengths, count_batches)

    variants = list(VARIANTS)
    if infinity_python is not None:
        variants.append((INFINITY_LABEL, "infinity"))
    results: list[VariantResult] = []
    vectors: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        for label, variant in variants:
            out_npy = Path(tmp) / f"{variant}.npy"
            console.print(f"running {label} …")
            if variant == "infinity":
                assert infinity_python is not None
                command = [
                    str(infinity_python),
                    str(Path(__file__).with_name("infinity_child.py")),
                    "--texts",
                    str(texts_file),
                    "--out-npy",
                    str(out_npy),
                    "--source-dir",
                    str(source_dir),
                    "--fp32-onnx",
                    str(model_dir / manifest.onnx_file),
                    "--pooling",
                    manifest.pooling,
                    "--threads",
                    str(threads),
                    "--batch-size",
                    str(batch_size),
                ]
            else:
                command = [
                    sys.executable,
                    "-m",
                    "ops.bench.engine_variants",
                    variant,
                    "--texts",
                    str(texts_file),
                    "--out-npy",
                    str(out_npy),
                    "--model-dir",
                    str(model_dir),
                    "--int8-dir",
                    str(int8_dir),
                    "--source-dir",
                    str(source_dir),
                    "--threads",
                    str(threads),
                    "--batch-size",
                    str(batch_size),
                    "--max-batch-tokens",
                    str(max_batch_tokens),
                ]
            measured = _run_child(command)
            vectors[label] = np.load(out_npy)
            padding = (
                None
                if variant == "infinity"
                else count_padding
                if variant in ("torch-eager", "sentence-transformers")
                else ours_padding
            )
            results.append(
                VariantResult(
                    label=label,
                    backend=str(measured["backend"]),
                    texts_per_s=len(texts) / measured["seconds"],
                    tokens_per_s=total_tokens / measured["seconds"],
                    padding_ratio=padding,
                    peak_rss_mb=float(measured["peak_rss_mb"]),
                    mean_cos=None,
                    min_cos=None,
                    recall_at_10=None,
                )
            )
    reference = vectors[VARIANTS[0][0]]
    for row in results:
        f = fidelity(reference, vectors[row.label])
        row.mean_cos, row.min_cos, row.recall_at_10 = f.mean_cos, f.min_cos, f.recall_at_10
    _print_table(console, results, manifest, len(texts), total_tokens, threads)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(
        json.dumps(
            {
                "benchmark": "engine",
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": machine_description(),
                "model": {
                    "manifest_id": manifest.manifest_id,
                    "source": manifest.source,
                    "int8_quality": ModelManifest.read(int8_dir).quality,
                },
                "corpus": {"texts": len(texts), "tokens": total_tokens},
                "threads": threads,
                "batch_size": batch_size,
                "max_batch_tokens": max_batch_tokens,
                "results": [asdict(r) for r in results],
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    console.print(f"wrote {out_json}")
    return results


def _print_table(
    console: Console,
    results: list[VariantResult],
    manifest: ModelManifest,
    n_texts: int,
    n_tokens: int,
    threads: int,
) -> None:
    def ratio(name: str, row: VariantResult) -> str:
        base = next((r for r in results if r.label.startswith(name)), None)
        return "" if base is None else f"{row.tokens_per_s / base.tokens_per_s:.2f}×"

    machine = machine_description()
    console.width = max(console.width, 170)  # a narrow pipe must not fold the figures
    table = Table(
        title=f"{manifest.source} on {machine['cpu']} ({threads} threads, "
        f"AMX: {machine['amx_bf16']}); {n_texts} texts, {n_tokens} tokens"
    )
    for column in (
        "variant",
        "backend",
        "texts/s",
        "tokens/s",
        "× ST",
        "× infinity",
        "padding",
        "peak RSS MB",
        "mean cos",
        "min cos",
        "recall@10",
    ):
        table.add_column(column, justify="left" if column in ("variant", "backend") else "right")
    for row in results:
        table.add_row(
            row.label,
            row.backend,
            f"{row.texts_per_s:.0f}",
            f"{row.tokens_per_s:.0f}",
            ratio("sentence-transformers", row),
            ratio(INFINITY_LABEL, row),
            "n/a" if row.padding_ratio is None else f"{row.padding_ratio:.1%}",
            f"{row.peak_rss_mb:.0f}",
            f"{row.mean_cos:.5f}",
            f"{row.min_cos:.5f}",
            f"{row.recall_at_10:.3f}",
        )
    console.print(table)
