"""`embedq bench rerank`: our reranking engine's variants against sentence-transformers'
CrossEncoder (torch FP32, torch BF16 weights, backend="onnx", backend="openvino") on the same
pairs at several passage lengths, each variant in its own process at the same thread count.
Prints a table per length and writes JSON."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from tokenizers import Tokenizer

from embedq_core.manifest import ModelManifest
from ops.bench.engine import machine_description, machine_label, run_child, source_commit
from ops.bench.rerank_child import PEERS
from ops.bench.rerank_shapes import RerankerShape, flops_per_token
from ops.data.corpus import load_bench_passages, load_demo_corpus
from workers.engine.hardware import detect_hardware
from workers.engine.pair_tokenize import PairTokenizer

LABELS = {
    "st-ce-torch-fp32": "CrossEncoder, torch FP32 (reference)",
    "st-ce-torch-bf16": "CrossEncoder, torch BF16 weights",
    "st-ce-onnx": 'CrossEncoder, backend="onnx"',
    "st-ce-openvino": 'CrossEncoder, backend="openvino"',
    "ours-ort-fp32": "ours: ONNX Runtime FP32",
    "ours-ov-fp32": "ours: OpenVINO FP32",
    "ours-ov-bf16": "ours: OpenVINO BF16",
    "ours-ov-int8": "ours: OpenVINO INT8 (NNCF)",
}
QUERY = "明天会下雨吗？天气预报怎么说"


@dataclass
class RerankRow:
    """One variant at one passage length."""

    variant: str
    label: str
    backend: str
    length: str
    pairs_per_s: float
    tokens_per_s: float
    ratio_to_best_peer: float | None
    max_abs_logit_error: float
    top10_agreement: float
    peak_rss_mb: float
    gflop_per_s: float


def default_variants() -> tuple[list[str], list[str]]:
    """The variants to run here, and why the others are left out."""
    skipped = []
    peers, ours = list(PEERS), ["ours-ort-fp32", "ours-ov-fp32"]
    if detect_hardware().cpu_has_bf16:
        ours.append("ours-ov-bf16")
    else:
        # Without the instructions torch emulates BF16 and runs slower than FP32: no peer a
        # user would pick on this CPU.
        peers.remove("st-ce-torch-bf16")
        for variant in ("st-ce-torch-bf16", "ours-ov-bf16"):
            skipped.append(f"{variant}: this CPU has no BF16 instructions (amx_bf16, avx512_bf16)")
    return [*peers, *ours, "ours-ov-int8"], skipped


def build_pairs(
    tokenizer_file: Path, shape: RerankerShape, lengths: list[int], pairs: int
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per length L: the query and `pairs` passages of exactly L tokens (bench passages and
    demo sentences, joined and cut by the model's tokenizer), and the lengths left out."""
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    source = [t for _, t in load_bench_passages()] + [t for _, t in load_demo_corpus()]
    query_tokens = len(tokenizer.encode(QUERY, add_special_tokens=False).ids)
    corpora: dict[str, dict[str, Any]] = {}
    skipped = []
    for length in lengths:
        if length + query_tokens + 4 > shape.max_tokens:
            skipped.append(f"{length} tokens: {shape.name} reads {shape.max_tokens} per pair")
            continue
        passages = []
        start = 0
        for _ in range(pairs):
            text = ""
            while len(tokenizer.encode(text, add_special_tokens=False).ids) < length:
                text += source[start % len(source)] + " "
                start += 1
            encoded = tokenizer.encode(text, add_special_tokens=False)
            passages.append(text[: encoded.offsets[length - 1][1]])
        corpora[f"{length} tokens"] = {"query": QUERY, "passages": passages}
    return corpora, skipped


def _top10_agreement(ours: np.ndarray, reference: np.ndarray) -> float:
    k = min(10, len(reference))
    return len(set(np.argsort(-ours)[:k]) & set(np.argsort(-reference)[:k])) / k


def run_rerank_bench(
    shape: RerankerShape,
    source_dir: Path,
    fp32_dir: Path,
    int8_dir: Path,
    corpora: dict[str, dict[str, Any]],
    variants: list[str],
    threads: int,
    batch_size: int,
    repeats: int,
    out_json: Path,
    console: Console,
    skipped: list[str],
) -> list[RerankRow]:
    """Every variant on every length: pairs/s, tokens/s, fidelity against CrossEncoder torch
    FP32 (max |logit error|, top-10 agreement), peak RSS."""
    manifest = ModelManifest.read(fp32_dir)
    pair_tokenizer = PairTokenizer(fp32_dir / "tokenizer.json", manifest.max_length)
    tokens = {
        name: [len(p.ids) for p in pair_tokenizer.encode(c["query"], c["passages"])]
        for name, c in corpora.items()
    }
    measured: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pairs_file = Path(tmp) / "pairs.json"
        pairs_file.write_text(json.dumps(corpora, ensure_ascii=False), encoding="utf-8")
        for variant in variants:
            console.print(f"running {LABELS[variant]} …")
            measured[variant] = run_child(
                [
                    sys.executable, "-m", "ops.bench.rerank_child", variant,
                    "--fp32-dir", str(fp32_dir), "--int8-dir", str(int8_dir),
                    "--source-dir", str(source_dir),
                    "--pairs", str(pairs_file), "--threads", str(threads),
                    "--batch-size", str(batch_size), "--repeats", str(repeats),
                ]
            )  # fmt: skip
    reference_variant = "st-ce-torch-fp32" if "st-ce-torch-fp32" in variants else variants[0]
    rows: list[RerankRow] = []
    for name, corpus in corpora.items():
        count = len(corpus["passages"])
        best_peer = max(
            (count / measured[v]["lengths"][name]["seconds"] for v in variants if v in PEERS),
            default=None,
        )
        reference = np.array(measured[reference_variant]["lengths"][name]["logits"])
        flops = sum(flops_per_token(shape, n) * n for n in tokens[name])
        for variant in variants:
            result = measured[variant]["lengths"][name]
            logits = np.array(result["logits"])
            pairs_per_s = count / result["seconds"]
            rows.append(
                RerankRow(
                    variant=variant,
                    label=LABELS[variant],
                    backend=measured[variant]["backend"],
                    length=name,
                    pairs_per_s=pairs_per_s,
                    tokens_per_s=sum(tokens[name]) / result["seconds"],
                    ratio_to_best_peer=None if best_peer is None else pairs_per_s / best_peer,
                    max_abs_logit_error=float(np.max(np.abs(logits - reference))),
                    top10_agreement=_top10_agreement(logits, reference),
                    peak_rss_mb=float(measured[variant]["peak_rss_mb"]),
                    gflop_per_s=flops / result["seconds"] / 1e9,
                )
            )
    machine = machine_description()
    _print(console, rows, f"{shape.name} (random weights) on {machine_label(machine)}", tokens)
    for reason in skipped:
        console.print(f"not run: {reason}")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "rerank",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": source_commit(),
        "machine": machine,
        "model": {
            "shape": shape.name,
            "stands_for": shape.stands_for,
            "random_weights": True,
            "manifest_id": manifest.manifest_id,
            "int8_quality": ModelManifest.read(int8_dir).quality
            if "ours-ov-int8" in variants
            else None,
            "max_tokens": shape.max_tokens,
        },
        "threads": threads,
        "batch_size": batch_size,
        "repeats": repeats,
        "pairs": {
            name: {"pairs": len(c["passages"]), "tokens": sum(tokens[name])}
            for name, c in corpora.items()
        },
        "not_run": skipped,
        "rows": [asdict(row) for row in rows],
    }
    out_json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    console.print(f"wrote {out_json}")
    return rows


def _print(
    console: Console, rows: list[RerankRow], title: str, tokens: dict[str, list[int]]
) -> None:
    console.width = max(console.width, 160)
    for name, counts in tokens.items():
        table = Table(
            title=f"{title}: passages of {name}, {len(counts)} pairs, {sum(counts):,} tokens"
        )
        columns = (
            "variant",
            "backend",
            "pairs/s",
            "tokens/s",
            "× best peer",
            "max |Δlogit|",
            "top-10 agree",
            "GFLOP/s",
            "peak RSS MB",
        )
        for column in columns:
            table.add_column(column, justify="left" if column in columns[:2] else "right")
        for row in (r for r in rows if r.length == name):
            table.add_row(
                row.label, row.backend, f"{row.pairs_per_s:.2f}", f"{row.tokens_per_s:.0f}",
                "" if row.ratio_to_best_peer is None else f"{row.ratio_to_best_peer:.2f}×",
                f"{row.max_abs_logit_error:.2e}", f"{row.top10_agreement:.2f}",
                f"{row.gflop_per_s:.1f}", f"{row.peak_rss_mb:.0f}",
            )  # fmt: skip
        console.print(table)
