"""`embedq bench engine` runs every local variant, prints its table and writes its JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_bench_engine_smoke_run_writes_every_variant(tmp_path: Path, minilm_dir: Path) -> None:
    model_dir = tmp_path / "minilm"
    shutil.copytree(minilm_dir, model_dir)
    out = tmp_path / "engine.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ops.cli",
            "bench",
            "engine",
            "--model-dir",
            str(model_dir),
            "--limit",
            "48",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tokens/s" in result.stdout
    report = json.loads(out.read_text())
    labels = [row["label"] for row in report["results"]]
    assert labels[0].startswith("torch eager") and len(labels) == 6
    assert report["corpus"]["texts"] == 48 and report["machine"]["cores"] >= 1
    rows = {row["label"]: row for row in report["results"]}
    assert rows["ours: ONNX Runtime FP32"]["min_cos"] >= 0.9999
    assert rows["sentence-transformers encode()"]["min_cos"] >= 0.9999
    assert all(row["tokens_per_s"] > 0 and row["peak_rss_mb"] > 0 for row in rows.values())
    assert report["model"]["int8_quality"]["mean_cos_vs_fp32"] >= 0.99


def test_bench_migrate_compares_the_migration_with_the_bare_engine(
    tmp_path: Path, minilm_dir: Path
) -> None:
    out = tmp_path / "migrate.json"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ops.cli",
            "bench",
            "migrate",
            "--model-dir",
            str(minilm_dir),
            "--rows",
            "600",
            "--chunk-size",
            "100",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "× bare engine" in result.stdout
    report = json.loads(out.read_text())
    variants = [row["variant"] for row in report["results"]]
    assert variants[0].startswith("bare engine") and len(variants) == 3
    assert all(row["rows"] == 600 and row["rows_per_s"] > 0 for row in report["results"])


def _bench(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "COLUMNS": "200"},
    )


def test_bench_query_reports_percentiles_idle_and_under_bulk_load(
    tmp_path: Path, minilm_dir: Path
) -> None:
    out = tmp_path / "query.json"
    result = _bench(
        ["query", "--model-dir", str(minilm_dir), "--calls", "12", "--bulk-texts", "300",
         "--out", str(out)]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "p95 ms" in result.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {(r["endpoint"], r["phase"].split(" (")[0]) for r in rows} == {
        ("/v1/embeddings", "idle"),
        ("/search", "idle"),
        ("/v1/embeddings", "bulk job running"),
        ("/search", "bulk job running"),
    }
    assert all(0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["max_ms"] for r in rows)


def test_bench_write_path_compares_copy_with_executemany(tmp_path: Path) -> None:
    out = tmp_path / "write.json"
    result = _bench(["write-path", "--rows", "1000", "--batch", "250", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vs executemany" in result.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"].split(" ")[0] for r in rows] == ["binary", "executemany", "binary"]
    assert all(r["rows"] > 0 and r["rows_per_s"] > 0 for r in rows)


def test_bench_pipeline_compares_the_whole_path_with_the_bare_engine(
    tmp_path: Path, minilm_dir: Path
) -> None:
    out = tmp_path / "pipeline.json"
    result = _bench(
        ["pipeline", "--model-dir", str(minilm_dir), "--texts", "150", "--no-hnsw-variant",
         "--write-rows", "600", "--out", str(out)]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "engine idle" in result.stdout
    report = json.loads(out.read_text())
    variants = [r["variant"] for r in report["runs"]]
    assert variants[0].startswith("bare engine") and variants[-1].startswith("bare engine")
    assert [v.split(",")[1].strip() for v in variants[1:-1]] == [
        "write in line",
        "write behind the engine",
    ]
    for run in report["runs"][1:-1]:
        assert run["texts"] == 150 and run["ratio_to_engine"] > 0
        # The worker's own stages were scraped: its engine time is part of the wall time.
        assert 0 < run["split_s"]["engine"] <= run["seconds"]
        assert run["split_s"]["write"] > 0
    assert [r["variant"].split(" ")[0] for r in report["write_path"]] == [
        "binary",
        "executemany",
        "binary",
    ]
