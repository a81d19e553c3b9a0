"""The bench commands run, print their tables and write their JSON (smoke runs; no timings
are asserted)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops.bench.pipeline import streams_run_here
from ops.data.corpus import load_demo_corpus
from ops.export.model import ExportOptions, export_model
from tests.reranker_models import build_bert_reranker
from tests.support import engine_config

# The reference, one more peer, and our INT8 path with each engine step (a subset keeps it quick).
SMOKE_VARIANTS = "st-torch-fp32,st-onnx,ours-ov-int8,ours-ov-int8-pad16,ours-ov-int8-2streams"


@pytest.fixture(scope="module")
def tiny_bert_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir for the tiny-bert engine runs: the shape's model and its exports are built
    by the first run and reused by the next, as on a user's machine."""
    return tmp_path_factory.mktemp("tiny-bert-data")


def test_bench_engine_smoke_run_on_a_tiny_shape(tmp_path: Path, tiny_bert_data: Path) -> None:
    """--shape builds a random-weight model, exports FP32 and INT8 (OpenVINO) through
    export-model's code, runs peers and ours on both corpora and reports both."""
    out = tmp_path / "engine.json"
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli.main", "bench", "engine", "--shape", "tiny-bert",
         "--limit", "12", "--repeats", "1", "--variants", SMOKE_VARIANTS, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200", "EMBEDQ_DATA_DIR": str(tiny_bert_data)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "× best peer" in result.stdout and "infinity" in result.stdout
    report = json.loads(out.read_text())
    assert report["model"]["random_weights"] and report["model"]["shape"] == "tiny-bert"
    assert report["corpora"]["sentences"]["texts"] == report["corpora"]["passages"]["texts"] == 12
    rows = {(row["variant"], row["corpus"]): row for row in report["rows"]}
    assert len(rows) == 10
    for corpus in ("sentences", "passages"):
        assert rows[("st-onnx", corpus)]["min_cos"] >= 0.9999
        assert rows[("ours-ov-int8", corpus)]["backend"] == "openvino-int8"
        # The engine steps change scheduling and shapes, never the vectors.
        for step in ("ours-ov-int8-pad16", "ours-ov-int8-2streams"):
            assert (
                rows[(step, corpus)]["min_cos"] >= rows[("ours-ov-int8", corpus)]["min_cos"] - 1e-4
            )
        peers = [
            r["texts_per_s"] for (v, c), r in rows.items() if c == corpus and v.startswith("st")
        ]
        best = rows[("ours-ov-int8", corpus)]
        assert abs(best["ratio_to_best_peer"] - best["texts_per_s"] / max(peers)) < 1e-9
    assert all(r["tokens_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in rows.values())
    assert "mean_cos_vs_fp32" in report["model"]["int8_quality"]


def test_bench_engine_sweeps_batch_budgets(tmp_path: Path, tiny_bert_data: Path) -> None:
    """--max-batch-tokens runs each of our variants once per budget, in one run and one
    table; the budget changes how texts are batched, never their vectors. The peer keeps
    batches of its own size (--peer-batch-size)."""
    out = tmp_path / "engine-budgets.json"
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli.main", "bench", "engine", "--shape", "tiny-bert",
         "--limit", "12", "--repeats", "1", "--batch-size", "64", "--peer-batch-size", "4",
         "--variants", "st-torch-fp32,ours-ort-fp32", "--max-batch-tokens", "64,1024",
         "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200", "EMBEDQ_DATA_DIR": str(tiny_bert_data)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ONNX Runtime FP32, 1024 tokens a batch" in result.stdout
    report = json.loads(out.read_text())
    assert (report["batch_size"], report["peer_batch_size"]) == (64, 4)
    rows = {(row["variant"], row["corpus"]): row for row in report["rows"]}
    assert {v for v, _ in rows} == {"st-torch-fp32", "ours-ort-fp32@64", "ours-ort-fp32@1024"}
    for corpus in ("sentences", "passages"):
        for budget in (64, 1024):
            row = rows[(f"ours-ort-fp32@{budget}", corpus)]
            assert row["label"] == f"ours: ONNX Runtime FP32, {budget} tokens a batch"
            assert row["min_cos"] >= 0.9999
            # Only the settings' budget (1,024) on this CPU's default runtime is the default.
            default_here = budget == 1024 and row["backend"] == report["default_backend_here"]
            assert row["is_default"] == default_here


def test_bench_engine_long_inputs_on_a_tiny_sparse_shape(tmp_path: Path) -> None:
    """A long-input sparse shape (tiny-m3, bge-m3's layout at toy size) runs a corpus per token
    length, texts of exactly that many tokens, only our FP32 variants: no peer, no INT8 model."""
    out = tmp_path / "engine-m3.json"
    data = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli.main", "bench", "engine", "--shape", "tiny-m3",
         "--limit", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200", "EMBEDQ_DATA_DIR": str(data)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "random weights" in result.stdout
    report = json.loads(out.read_text())
    assert report["model"]["shape"] == "tiny-m3" and report["model"]["random_weights"]
    assert report["model"]["int8_quality"] is None
    assert not (data / "models" / "shape-tiny-m3" / "int8-openvino").exists()
    lengths = {"32 tokens": (2, 32), "128 tokens": (2, 128), "512 tokens": (1, 512)}
    assert {name: (c["texts"], c["max_tokens"]) for name, c in report["corpora"].items()} == lengths
    assert all(report["corpora"][n]["tokens"] == t * n_tok for n, (t, n_tok) in lengths.items())
    variants = {row["variant"] for row in report["rows"]}
    assert "ours-ort-fp32" in variants
    assert variants <= {"ours-ort-fp32", "ours-ov-bf16", "ours-ov-fp32"}  # no peer, no INT8
    assert {(v, n) for v in variants for n in lengths} == {
        (row["variant"], row["corpus"]) for row in report["rows"]
    }
    assert all(r["texts_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in report["rows"])


def test_bench_migrate_compares_the_migration_with_the_bare_engine(
    tmp_path: Path, minilm_dir: Path
) -> None:
    out = tmp_path / "migrate.json"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ops.cli.main",
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


def _bench(args: list[str], data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    if data_dir is not None:  # models the bench builds go there, not into the checkout
        env["EMBEDQ_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "ops.cli.main", "bench", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "COLUMNS": "200"},
    )


def test_bench_query_reports_percentiles_idle_and_under_bulk_load(
    tmp_path: Path, minilm_dir: Path
) -> None:
    """Embeddings, search and (a tiny random-weight reranker's worker beside the embedder's)
    rerank of 20 and 100 candidates, idle and while a bulk job runs."""
    texts = [text for _, text in load_demo_corpus()]
    source = build_bert_reranker(tmp_path / "reranker-src", texts)
    reranker = tmp_path / "reranker"
    export_model(str(source), reranker, ExportOptions(), engine_config())
    out = tmp_path / "query.json"
    result = _bench(
        ["query", "--model-dir", str(minilm_dir), "--calls", "8", "--bulk-texts", "150",
         "--reranker-dir", str(reranker), "--max-batch-tokens", "1024",
         "--max-batch-tokens", "256", "--out", str(out)]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "p95 ms" in result.stdout
    report = json.loads(out.read_text())
    rows = report["rows"]
    endpoints = ["/v1/embeddings", "/search", "/v1/rerank (20 candidates)"]
    endpoints.append("/v1/rerank (100 candidates)")
    # The bulk phase runs once per budget and preemption setting: the default's (4), then 0.
    workers = [(4, 1024), (0, 1024), (4, 256), (0, 256)]
    phases = [("idle", 4, 1024)] + [("bulk job running", p, b) for p, b in workers]
    assert {
        (r["endpoint"], r["phase"].split(" (")[0], r["preemptions"], r["max_batch_tokens"])
        for r in rows
    } == {(endpoint, *phase) for endpoint in endpoints for phase in phases}
    assert all(0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["max_ms"] for r in rows)
    bulk = [(b["preemptions"], b["max_batch_tokens"], b["texts"]) for b in report["bulk"]]
    assert bulk == [(p, b, 150) for p, b in workers]
    assert all(b["texts_per_s"] > 0 for b in report["bulk"])


def test_bench_write_path_compares_copy_with_executemany(tmp_path: Path) -> None:
    out = tmp_path / "write.json"
    result = _bench(["write-path", "--rows", "1000", "--batch", "250", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vs executemany" in result.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"].split(",")[0] for r in rows] == [
        "binary COPY",
        "binary COPY + upsert",
        "executemany upsert (psycopg 3",
        "executemany upsert",
        "one upsert per row",
        "binary COPY",
    ]
    assert all(r["rows"] > 0 and r["rows_per_s"] > 0 for r in rows)


def test_bench_pipeline_compares_the_whole_path_with_the_bare_engine(
    tmp_path: Path, minilm_dir: Path
) -> None:
    out = tmp_path / "pipeline.json"
    has_streams = streams_run_here(minilm_dir, engine_config())
    # One run of each variant: the order of repeated sets and their medians are unit-tested
    # (tests/unit/test_bench_medians.py); here every variant runs once through the real stack.
    result = _bench(
        ["pipeline", "--model-dir", str(minilm_dir), "--texts", "100", "--no-hnsw-variant",
         "--small-jobs", "40", "--texts-per-small-job", "4", "--repeat", "1",
         "--write-rows", "600",
         "--out", str(out)]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "engine idle" in result.stdout
    report = json.loads(out.read_text())
    variants = [r["variant"] for r in report["runs"]]
    # Bare engine before and after (all texts in one call, then one task's chunk each time).
    assert variants[0] == "bare engine, all 100 texts in one call (before)"
    assert variants[1].startswith("bare engine, one call per task (")
    assert variants[1].endswith(" tasks, as the API cuts them) (before)")
    assert variants[-2:] == [v.replace("(before)", "(after)") for v in variants[:2]]
    inline, behind, ahead, tokenise, streams = (
        "whole path, write in line, new collection",
        "whole path, write behind the engine, new collection",
        "whole path, claim ahead, write behind, new collection",
        "whole path, claim ahead, write behind, tokenise ahead, new collection",
        "whole path, claim ahead, write behind, 2 engine streams, new collection",
    )
    # Two engine streams run only on OpenVINO, which this machine may not choose for the model.
    assert variants[2:-2] == [
        inline, behind, ahead, tokenise, *([streams] if has_streams else []),
        "40 texts as 10 jobs of 4, one batch per delivery",
        "40 texts as 10 jobs of 4, small batches coalesced",
    ]  # fmt: skip
    # A bare run's ratio is against the one-call figure (mean of before and after); a
    # whole-path run's against the one-call runs just before and after it (interleaved).
    one_call = (report["runs"][0]["seconds"] + report["runs"][-2]["seconds"]) / 2
    assert report["runs"][0]["engine_texts_per_s"] == pytest.approx(100 / one_call)
    assert report["runs"][0]["ratio_to_engine"] == pytest.approx(
        one_call / report["runs"][0]["seconds"]
    )
    # Whole-path runs are interleaved with one-call bare runs: each run's "after" is the next
    # run's "before"; the first's is the bare run before the stack, the last's the one after.
    whole = report["runs"][2:-2]
    assert whole[0]["engine_before_texts_per_s"] == report["runs"][0]["texts_per_s"]
    assert whole[-1]["engine_after_texts_per_s"] == report["runs"][-2]["texts_per_s"]
    for earlier, later in itertools.pairwise(whole):
        assert earlier["engine_after_texts_per_s"] == later["engine_before_texts_per_s"]
    for run in whole:
        assert run["engine_texts_per_s"] == pytest.approx(
            (run["engine_before_texts_per_s"] + run["engine_after_texts_per_s"]) / 2
        )
    for run in report["runs"]:
        assert run["ratio_to_engine"] == pytest.approx(
            run["texts_per_s"] / run["engine_texts_per_s"]
        )
    assert report["median_ratio_to_engine"] == {}  # nothing repeated, no median
    for run in report["runs"][2:-2]:
        assert run["texts"] == (100 if run["variant"].startswith("whole") else 40)
        assert run["engine_texts_per_s"] > 0 and run["ratio_to_engine"] > 0
        # The worker's and the API's CPU were counted (they are found by process id).
        assert run["cpu_s"]["worker"] > 0 and run["cpu_s"]["api"] > 0
        # Linux reports the time the host took from the cores (0 on a machine of its own).
        assert run["cpu_s"]["stolen"] >= 0
        # A new collection's HNSW index was built after its load, before the next run.
        assert run["index_ready_s"] is not None and run["index_ready_s"] >= 0
        # The worker's own stages were scraped: its engine time is part of the wall time.
        assert 0 < run["split_s"]["engine"] <= run["seconds"]
        assert run["split_s"]["write"] > 0
    assert len(report["write_path"]) == 6
    assert all(r["rows_per_s"] > 0 for r in report["write_path"])


def test_bench_rerank_compares_our_reranker_with_cross_encoder(tmp_path: Path) -> None:
    """--shape builds a random-weight cross-encoder and exports it through export-model's code;
    every variant scores the same pairs of exactly each length; the peers' and our logits agree
    (the same model, FP32), and a length past the model's limit is left out, saying why."""
    out = tmp_path / "rerank.json"
    variants = "st-ce-torch-fp32,st-ce-onnx,ours-ort-fp32,ours-ov-fp32,ours-ov-int8"
    result = _bench(
        ["rerank", "--shape", "tiny-reranker", "--lengths", "32,128,4096", "--pairs", "4",
         "--repeats", "1", "--variants", variants, "--out", str(out)],
        data_dir=tmp_path / "data",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "× best peer" in result.stdout and "not run: 4096 tokens" in result.stdout
    report = json.loads(out.read_text())
    assert report["model"]["shape"] == "tiny-reranker" and report["commit"]
    assert set(report["pairs"]) == {"32 tokens", "128 tokens"}
    assert report["pairs"]["128 tokens"]["tokens"] >= 4 * 128
    rows = {(row["variant"], row["length"]): row for row in report["rows"]}
    assert len(rows) == 10
    for (variant, _), row in rows.items():
        assert row["pairs_per_s"] > 0 and row["peak_rss_mb"] > 0
        if variant != "ours-ov-int8":  # the same FP32 model: the same logits
            assert row["max_abs_logit_error"] < 1e-3 and row["top10_agreement"] == 1.0
    assert rows[("ours-ov-int8", "32 tokens")]["backend"] == "openvino-int8"
    assert "pair_agreement_vs_fp32" in report["model"]["int8_quality"]
    best_peer = max(
        rows[(v, "32 tokens")]["pairs_per_s"] for v in ("st-ce-torch-fp32", "st-ce-onnx")
    )
    ours = rows[("ours-ort-fp32", "32 tokens")]
    assert abs(ours["ratio_to_best_peer"] - ours["pairs_per_s"] / best_peer) < 1e-9


def test_bench_mine_smoke_run(tmp_path: Path) -> None:
    """Both vector distributions, HNSW and exact, recall computed against the exact run."""
    out = tmp_path / "mine.json"
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli.main", "bench", "mine", "--rows", "1500",
         "--queries", "70", "--exact-queries", "20", "--dimension", "64", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "COLUMNS": "200", "EMBEDQ_DATA_DIR": str(tmp_path / "data")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "queries/s" in result.stdout
    report = json.loads(out.read_text())
    rows = {(r["distribution"], r["variant"].split(",")[0]): r for r in report["results"]}
    assert set(rows) == {(d, v) for d in ("uniform", "clustered") for v in ("HNSW", "exact scan")}
    for distribution in ("uniform", "clustered"):
        hnsw, exact = rows[(distribution, "HNSW")], rows[(distribution, "exact scan")]
        assert hnsw["queries"] == 70 and exact["queries"] == 20
        assert 0 < hnsw["recall_of_exact"] <= 1 and exact["recall_of_exact"] == 1.0
        assert hnsw["index_build_s"] > 0 and hnsw["queries_per_s"] > 0


def test_bench_vectorize_smoke_run(tmp_path: Path, minilm_dir: Path) -> None:
    """Writer overhead on both tables and the lag at one rate, through a real worker."""
    out = tmp_path / "vectorize.json"
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli.main", "bench", "vectorize", "--model-dir",
         str(minilm_dir), "--inserts", "50", "--rates", "20", "--duration", "3",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "COLUMNS": "200", "EMBEDQ_DATA_DIR": str(tmp_path / "data")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lag p95 s" in result.stdout
    report = json.loads(out.read_text())
    assert [r["table"] for r in report["overhead"]] == ["plain table", "bound to a vectorizer"]
    assert all(r["inserts"] == 50 and r["p95_ms"] >= r["p50_ms"] > 0 for r in report["overhead"])
    (lag,) = report["lag"]
    assert lag["rows"] >= 50 and 0 < lag["lag_p50_s"] <= lag["lag_p95_s"] <= lag["lag_max_s"]


def test_bench_chunking_compares_worker_cut_documents_with_client_cut_pieces(
    tmp_path: Path, minilm_dir: Path
) -> None:
    out = tmp_path / "chunking.json"
    result = _bench(
        ["chunking", "--model-dir", str(minilm_dir), "--documents", "4", "--min-chars", "600",
         "--max-chars", "1500", "--max-tokens", "100", "--overlap-tokens", "10",
         "--out", str(out)]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"].split(" (")[0] for r in rows] == ["cut by the worker", "cut by the client"]
    assert rows[0]["documents"] == rows[1]["documents"] == 4
    assert rows[0]["chunks"] == rows[1]["chunks"] > 4  # each document longer than a window
    assert all(r["documents_per_s"] > 0 and r["tokens_per_s"] > 0 for r in rows)


def test_bench_profile_splits_engine_time_by_node_type(tmp_path: Path, minilm_dir: Path) -> None:
    out = tmp_path / "profile.json"
    result = _bench(["profile", "--model-dir", str(minilm_dir), "--texts", "6", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["texts"] == 6 and report["batches"] >= 1
    assert abs(sum(report["categories"].values()) - 1.0) < 1e-6
    assert report["categories"]["dense layers"] > 0.3  # MiniLM's time is mostly its matmuls
    assert sum(r["ms"] for r in report["rows"]) == pytest.approx(report["total_ms"])
