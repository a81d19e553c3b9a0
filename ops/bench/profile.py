"""`embedq bench profile`: where OpenVINO spends an export's engine time, from its per-node
counters (PERF_COUNT), on the batches the engine would make of the bench passages.

The model is compiled as the engine compiles it (the backend the manifest and this CPU call for,
the engine's threads), plus counters; each batch shape runs once unprofiled first, so kernel
preparation for a new shape is not counted. Time is summed by node type and kernel (exec type:
`brgemm_avx512_amx`, `jit_avx2_FP32`, `ref_any` ...) and by category (dense layers, attention,
normalisation, elementwise, reorders and conversions)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from embedq_core.manifest import ModelManifest
from ops.bench.engine import machine_description, machine_label, source_commit
from ops.data.corpus import load_bench_passages
from workers.engine.backend_choice import choose_backend
from workers.engine.batching import plan_batches
from workers.engine.config import EngineConfig
from workers.engine.hardware import detect_hardware
from workers.engine.tokenize import TextTokenizer

CATEGORIES = {
    "FullyConnected": "dense layers",
    "FullyConnectedQuantizedLegacy": "dense layers",
    "MatMul": "attention (matmuls)",
    "ScaledDotProductAttention": "attention (fused)",
    "MHA": "attention (fused)",
    "Softmax": "attention (softmax)",
    "MVN": "LayerNorm",
    "RMS": "LayerNorm",
    # OpenVINO's snippets fuse attention (MatMul-Softmax-MatMul) and GELU chains into
    # Subgraph nodes: the counters cannot tell the two apart.
    "Subgraph": "fused subgraphs (attention, GELU)",
    "Eltwise": "elementwise (adds, scales)",
    "Add": "elementwise (adds, scales)",
    "Multiply": "elementwise (adds, scales)",
    "MulAdd": "elementwise (adds, scales)",
    "Reorder": "reorders, transposes and conversions",
    "Transpose": "reorders, transposes and conversions",
    "Convert": "reorders, transposes and conversions",
    "FakeQuantize": "quantise / dequantise",
}


@dataclass
class NodeTime:
    """Time of one node type with one kernel, over every profiled batch."""

    node_type: str
    exec_type: str
    category: str
    nodes: int
    ms: float
    share: float


def run_profile(
    model_dir: Path, engine: EngineConfig, texts: int, out_json: Path, console: Console
) -> list[NodeTime]:
    """Profile model_dir's engine batches over `texts` bench passages; print and write JSON."""
    import openvino as ov

    manifest = ModelManifest.read(model_dir)
    backend = choose_backend("openvino", manifest, detect_hardware())
    tokenizer = TextTokenizer(model_dir / "tokenizer.json", manifest.max_length)
    tokenized = tokenizer.tokenize([t for _, t in load_bench_passages(max(texts, 1))][:texts])
    lengths = [len(t.ids) for t in tokenized]
    batches = plan_batches(lengths, engine.max_batch_tokens, engine.max_batch_size)
    core = ov.Core()
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": "bf16" if backend.openvino_bf16 else "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "PERF_COUNT": True,
    }
    if engine.intra_op_threads > 0:
        config["INFERENCE_NUM_THREADS"] = engine.intra_op_threads
    compiled = core.compile_model(
        core.read_model(str(model_dir / manifest.onnx_file)), "CPU", config
    )
    request = compiled.create_infer_request()
    names = {port.get_any_name() for port in compiled.inputs}
    totals: dict[tuple[str, str], float] = defaultdict(float)
    counts: dict[tuple[str, str], set[str]] = defaultdict(set)
    seen_shapes: set[tuple[int, ...]] = set()
    for batch in batches:
        ids, mask, types = tokenizer.pad([tokenized[i] for i in batch])
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = types
        if ids.shape not in seen_shapes:
            request.infer(feeds)  # a new shape's kernels are prepared on its first run
            seen_shapes.add(ids.shape)
        request.infer(feeds)
        for info in request.profiling_info:
            if info.status != ov.ProfilingInfo.Status.EXECUTED:
                continue
            key = (info.node_type, info.exec_type)
            totals[key] += info.real_time.total_seconds() * 1000
            counts[key].add(info.node_name)
    all_ms = sum(totals.values()) or 1.0
    rows = sorted(
        (
            NodeTime(t, e, CATEGORIES.get(t, "other"), len(counts[(t, e)]), ms, ms / all_ms)
            for (t, e), ms in totals.items()
        ),
        key=lambda r: -r.ms,
    )
    by_category: dict[str, float] = defaultdict(float)
    for row in rows:
        by_category[row.category] += row.ms
    _print(console, rows, by_category, all_ms, manifest, backend.kind, len(batches), lengths)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(
        json.dumps(
            {
                "benchmark": "profile",
                "commit": source_commit(),
                "machine": machine_description(),
                "model": manifest.source,
                "precision": manifest.precision,
                "backend": backend.kind,
                "threads": engine.intra_op_threads,
                "max_batch_tokens": engine.max_batch_tokens,
                "texts": len(lengths),
                "tokens": int(np.sum(lengths)),
                "batches": len(batches),
                "total_ms": all_ms,
                "categories": {k: v / all_ms for k, v in sorted(by_category.items())},
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {out_json}")
    return rows


def _print(
    console: Console, rows: list[NodeTime], by_category: dict[str, float], all_ms: float,
    manifest: ModelManifest, backend: str, batches: int, lengths: list[int],
) -> None:  # fmt: skip
    title = (
        f"{manifest.source} on {backend}, {len(lengths)} passages ({sum(lengths):,} tokens) in "
        f"{batches} engine batches, {machine_label(machine_description())}"
    )
    table = Table(title=title)
    for column in ("category", "share"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for category, ms in sorted(by_category.items(), key=lambda kv: -kv[1]):
        table.add_row(category, f"{ms / all_ms:.1%}")
    console.print(table)
    detail = Table(title=f"by node type and kernel (top 15 of {len(rows)}; {all_ms:,.0f} ms)")
    for column in ("node type", "kernel", "nodes", "ms", "share"):
        detail.add_column(column, justify="left" if column in ("node type", "kernel") else "right")
    for r in rows[:15]:
        detail.add_row(r.node_type, r.exec_type, str(r.nodes), f"{r.ms:,.0f}", f"{r.share:.1%}")
    console.print(detail)
