"""`embedq bench engine`: our engine's variants against the peers a user would pick, on the
same texts in one run, each variant in its own process at the same thread count. Prints a
table per corpus and writes JSON."""

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

from embedq_core.manifest import MANIFEST_FILENAME, ModelManifest
from ops.bench.engine_report import print_tables
from ops.bench.engine_variants import WARMUP_TEXTS_MAX
from ops.bench.peak import ClockSampler, detect_peak
from ops.bench.peers import PEERS
from ops.bench.shape_models import BenchModels
from ops.bench.shapes import ModelShape, shape_flops_per_token
from ops.export.fidelity import fidelity
from workers.engine.backend_choice import choose_backend
from workers.engine.config import EngineConfig
from workers.engine.hardware import cpu_flags, detect_hardware
from workers.engine.tokenize import TextTokenizer

LABELS = {
    "st-torch-fp32": "sentence-transformers, torch FP32 (reference)",
    "st-torch-bf16": "sentence-transformers, torch BF16 weights",
    "st-onnx": 'sentence-transformers, backend="onnx"',
    "st-openvino": 'sentence-transformers, backend="openvino"',
    "infinity": "infinity-emb, optimum",
    "ours-ort-fp32": "ours: ONNX Runtime FP32",
    "ours-ov-fp32": "ours: OpenVINO FP32",
    "ours-ov-bf16": "ours: OpenVINO BF16",
    "ours-ov-int8": "ours: OpenVINO INT8 (NNCF)",
    "ours-ov-int8-pad16": "ours: OpenVINO INT8, pad to 16",
    "ours-ov-int8-2streams": "ours: OpenVINO INT8, 2 streams",
    "ours-ov-bf16-pad16": "ours: OpenVINO BF16, pad to 16",
    "ours-ov-bf16-2streams": "ours: OpenVINO BF16, 2 streams",
}
DEFAULT_VARIANTS = [*PEERS, *(v for v in LABELS if v.startswith("ours"))]
# What each variant multiplies in (for the share of the CPU's peak).
ARITHMETIC = {"st-torch-bf16": "bf16", "ours-ov-bf16": "bf16"}


@dataclass
class Row:
    """One variant on one corpus."""

    variant: str
    label: str
    backend: str
    corpus: str
    texts_per_s: float
    tokens_per_s: float
    cold_texts_per_s: float  # the first timed pass: new input shapes included
    ratio_to_best_peer: float | None
    mean_cos: float
    min_cos: float
    recall_at_10: float
    peak_rss_mb: float
    arithmetic: str
    clock_ghz: float | None  # the mean clock /proc/cpuinfo reported while the variant ran
    share_of_peak: float | None
    is_default: bool


def source_commit() -> str:
    """The commit the bench ran (with `-dirty` when the tree had changes), or `unknown`
    outside a git checkout: the benchmarks page shows it beside each table."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        )
    except OSError:
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def machine_description() -> dict[str, Any]:
    """The machine the figures were measured on."""
    # The first processor's fields; the family and model tell CPU generations apart where a
    # VM's model name does not (a 2-core "AMD EPYC" was a Zen 4, family 25, then a Zen 5, 26).
    fields: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    flags = cpu_flags()
    return {
        "cpu": fields.get("model name", "unknown"),
        "cpu_vendor": fields.get("vendor_id"),
        "cpu_family": fields.get("cpu family"),
        "cpu_model": fields.get("model"),
        "cores": os.cpu_count(),
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "python": platform.python_version(),
    }


def machine_label(machine: dict[str, Any]) -> str:
    """The machine for a table's title: CPU with its family and model, and cores."""
    cpu = machine["cpu"]
    if machine.get("cpu_family") is not None:
        cpu += f" family {machine['cpu_family']} model {machine['cpu_model']}"
    return f"{cpu} ({machine['cores']} cores)"


def split_variant(variant: str) -> tuple[str, int | None]:
    """A variant of ours may name its batch budget: `ours-ov-bf16@4096` is ours-ov-bf16 with
    max_batch_tokens 4096 (the sweep of --max-batch-tokens)."""
    base, _, budget = variant.partition("@")
    return base, int(budget) if budget else None


def variant_label(variant: str) -> str:
    """The table's name of a variant, with its batch budget when it names one."""
    base, budget = split_variant(variant)
    return LABELS[base] if budget is None else f"{LABELS[base]}, {budget} tokens a batch"


def _arithmetic(variant: str) -> str:
    if "int8" in variant:
        return "int8"
    if variant == "st-openvino" or variant.startswith("ours-ov-bf16"):
        # OpenVINO's CPU default precision hint is BF16 wherever the CPU has BF16 instructions.
        return "bf16" if detect_hardware().cpu_has_bf16 else "fp32"
    return ARITHMETIC.get(variant, "fp32")


def run_child(command: list[str]) -> dict[str, Any]:
    """Run a bench variant's process; its last stdout line is its JSON result."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed:\n{result.stderr[-3000:]}")
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def run_engine_bench(
    models: BenchModels,
    shape: ModelShape,
    random_weights: bool,
    corpora: dict[str, list[str]],
    engine: EngineConfig,
    variants: list[str],
    out_json: Path,
    console: Console,
    repeats: int = 2,
    warmup_texts: int | None = None,
    peer_batch_size: int | None = None,
) -> list[Row]:
    """Run every variant on every corpus; throughput, memory, fidelity against the first
    variant (sentence-transformers torch FP32) and share of the CPU's peak. Peers run batches
    of peer_batch_size texts (default: the engine's max_batch_size)."""
    peer_batch = peer_batch_size or engine.max_batch_size
    manifest = ModelManifest.read(models.fp32_dir)
    tokenizer = TextTokenizer(models.fp32_dir / "tokenizer.json", manifest.max_length)
    lengths = {n: [len(t.ids) for t in tokenizer.tokenize(texts)] for n, texts in corpora.items()}
    flops = {
        name: sum(shape_flops_per_token(shape, n) * n for n in ns) for name, ns in lengths.items()
    }
    peak = detect_peak(os.cpu_count() or 1)
    default_kind = choose_backend("auto", manifest, detect_hardware()).kind
    measured: dict[str, dict[str, Any]] = {}
    clocks: dict[str, float | None] = {}
    vectors: dict[tuple[str, str], np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus_args = []
        for name, texts in corpora.items():
            path = Path(tmp) / f"{name}.json"
            path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
            corpus_args += ["--corpus", f"{name}={path}"]
        for variant in variants:
            console.print(f"running {variant_label(variant)} …")
            base, budget = split_variant(variant)
            out_dir = Path(tmp) / variant
            out_dir.mkdir()
            command = [
                sys.executable, "-m", "ops.bench.engine_variants", base, *corpus_args,
                "--out-dir", str(out_dir), "--model-dir", str(models.fp32_dir),
                "--int8-dir", str(models.int8_dir), "--source-dir", str(models.source_dir),
                "--threads", str(engine.intra_op_threads),
                "--batch-size", str(peer_batch if base in PEERS else engine.max_batch_size),
                "--max-batch-tokens", str(budget or engine.max_batch_tokens),
                "--repeats", str(repeats),
                *([] if warmup_texts is None else ["--warmup-texts", str(warmup_texts)]),
            ]  # fmt: skip
            with ClockSampler() as clock:
                measured[variant] = run_child(command)
            clocks[variant] = clock.mean_ghz
            for name in corpora:
                vectors[(variant, name)] = np.load(out_dir / f"{name}.npy")
    rows: list[Row] = []
    for name, texts in corpora.items():
        best_peer = max(
            (len(texts) / measured[v]["corpora"][name]["best_s"] for v in variants if v in PEERS),
            default=None,
        )
        for variant in variants:
            timing = measured[variant]["corpora"][name]
            texts_per_s = len(texts) / timing["best_s"]
            f = fidelity(vectors[(variants[0], name)], vectors[(variant, name)])
            arithmetic = _arithmetic(split_variant(variant)[0])
            clock_ghz = clocks[variant]
            peak_ops = None if peak is None else peak.peak_ops_per_s(arithmetic, clock_ghz)
            share = None if peak_ops is None else flops[name] / timing["best_s"] / peak_ops
            backend = str(measured[variant]["backend"])
            rows.append(
                Row(
                    variant=variant,
                    label=variant_label(variant),
                    backend=backend,
                    corpus=name,
                    texts_per_s=texts_per_s,
                    tokens_per_s=sum(lengths[name]) / timing["best_s"],
                    cold_texts_per_s=len(texts) / timing["first_s"],
                    ratio_to_best_peer=None if best_peer is None else texts_per_s / best_peer,
                    mean_cos=f.mean_cos,
                    min_cos=f.min_cos,
                    recall_at_10=f.recall_at_10,
                    peak_rss_mb=float(measured[variant]["peak_rss_mb"]),
                    arithmetic=arithmetic,
                    clock_ghz=clock_ghz,
                    share_of_peak=share,
                    is_default=variant.startswith("ours")
                    and backend == default_kind
                    and split_variant(variant)[1] in (None, engine.max_batch_tokens),
                )
            )  # fmt: skip
    title = (
        f"{shape.name} ({'random weights' if random_weights else manifest.source}) on "
        f"{machine_label(machine_description())}, {engine.intra_op_threads} threads"
    )
    print_tables(console, rows, title, {n: (len(t), sum(lengths[n])) for n, t in corpora.items()})
    out_json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "engine",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": source_commit(),
        "machine": machine_description(),
        "peak": None if peak is None else asdict(peak),
        "model": {
            "shape": shape.name,
            "stands_for": shape.stands_for,
            "architecture": shape.architecture,
            "random_weights": random_weights,
            "note": "speed depends on the shape, not the weights; fidelity on random weights "
            "says nothing about retrieval quality"
            if random_weights
            else "real weights",
            "fp32_manifest_id": manifest.manifest_id,
            "int8_quality": ModelManifest.read(models.int8_dir).quality
            if (models.int8_dir / MANIFEST_FILENAME).is_file()
            else None,  # no INT8 model (a sparse shape): see int8_refusal
        },
        "corpora": {
            n: {"texts": len(t), "tokens": sum(lengths[n]), "max_tokens": max(lengths[n])}
            for n, t in corpora.items()
        },
        "threads": engine.intra_op_threads,
        "batch_size": engine.max_batch_size,
        "peer_batch_size": peer_batch,
        "max_batch_tokens": engine.max_batch_tokens,
        "timed_passes": repeats,
        "warmup_texts": f"each variant's batch size, at most {WARMUP_TEXTS_MAX}"
        if warmup_texts is None
        else warmup_texts,
        "default_backend_here": default_kind,
        "rows": [asdict(r) for r in rows],
    }
    out_json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    console.print(f"wrote {out_json}")
    return rows
