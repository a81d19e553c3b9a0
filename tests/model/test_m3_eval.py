"""`embedq eval --mode dense|sparse|hybrid` on the tiny BGE-M3 (random weights, a deterministic
toy) and a labelled set where exact words matter; and what the stored 256-token cut costs on
passages longer than that. The figures say nothing about BGE-M3's quality."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from embedq_core.sparse_vectors import STORED_SPARSE_TOKENS
from ops.cli.main import main
from ops.data.corpus import load_demo_corpus
from tests.exact_words import exact_word_rows, write_exact_word_set
from tests.support import make_manifest_variant


def _eval(data: Path, model: Path, out: Path, *modes: str) -> tuple[Result, dict[str, Any]]:
    args = ["eval", "--data", str(data), "--model", str(model), "--json", str(out)]
    for mode in modes:
        args += ["--mode", mode]
    result = CliRunner().invoke(main, args, env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    return result, json.loads(out.read_text())


def _recall(report: dict[str, Any]) -> dict[str, float]:
    return {m["mode"]: m["metrics"]["global"]["recall@10"] for m in report["models"]}


def test_hybrid_recall_at_least_dense_on_exact_words(tiny_m3_dir: Path, tmp_path: Path) -> None:
    data = write_exact_word_set(tmp_path / "exact.jsonl")
    result, report = _eval(data, tiny_m3_dir, tmp_path / "r.json", "dense", "sparse", "hybrid")
    recall = _recall(report)
    print(f"eval recall@10 (global pool, {report['data']['passages']} passages): {recall}")
    assert set(recall) == {"dense", "sparse", "hybrid"}
    assert recall["hybrid"] >= recall["dense"], recall
    assert "mode hybrid" in result.output and "reciprocal-rank fusion" in result.output
    sparse = next(m for m in report["models"] if m["mode"] == "sparse")
    assert sparse["sparse_stored_tokens"] == STORED_SPARSE_TOKENS
    # Short passages keep every weight: the cut changes nothing here.
    assert sparse["uncut_metrics"]["global"] == sparse["metrics"]["global"]


def test_what_the_256_token_cut_costs_on_long_passages(tiny_m3_dir: Path, tmp_path: Path) -> None:
    """Each passage buries its code among ~400 shared filler words: past the cut, the code's
    weight competes with the filler's."""
    words = list(dict.fromkeys(w for _, t in load_demo_corpus() for w in t.split()))[:400]
    rng = random.Random(3)
    rows = []
    for row in exact_word_rows()[:48]:

        def pad(text: str) -> str:
            filler = rng.sample(words, len(words))
            return " ".join([*filler[:200], text, *filler[200:]])

        rows.append({"query": row["query"], "pos": [pad(t) for t in row["pos"]], "neg": []})
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result, report = _eval(data, tiny_m3_dir, tmp_path / "long.json", "sparse")
    (sparse,) = report["models"]
    cut = sparse["metrics"]["global"]["recall@10"]
    uncut = sparse["uncut_metrics"]["global"]["recall@10"]
    print(f"long passages: sparse recall@10 cut to {STORED_SPARSE_TOKENS}: {cut}, uncut: {uncut}")
    assert uncut >= cut and "-token cut costs" in result.output


def test_sparse_modes_need_a_sparse_model(tiny_m3_dir: Path, tmp_path: Path) -> None:
    dense_only = tmp_path / "dense-only"
    make_manifest_variant(tiny_m3_dir, dense_only, sparse=False, sparse_output_name=None)
    data = write_exact_word_set(tmp_path / "exact.jsonl")
    result = CliRunner().invoke(
        main, ["eval", "--data", str(data), "--model", str(dense_only), "--mode", "hybrid"]
    )
    assert result.exit_code != 0 and "sparse head" in result.output
