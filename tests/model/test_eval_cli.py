"""`embedq eval` end to end: real MiniLM weights and the random-weight BGE-shaped model, through
the workers' engine, on labelled pairs whose texts come from the demo corpus (so the tiny BGE's
character vocabulary covers them)."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ops.cli.main import main
from ops.data.corpus import load_demo_corpus
from ops.evaluation.metrics import METRICS

# (query, paraphrase positive, three negatives), demo corpus ids. Negatives share the query's
# broad domain where the corpus allows, so the test pool is not trivially easy.
PARAPHRASES = [
    ("en-000", "en-001", ["en-002", "en-009", "en-012"]),
    ("en-010", "en-011", ["en-012", "en-013", "en-018"]),
    ("en-020", "en-021", ["en-022", "en-023", "en-037"]),
    ("en-030", "en-031", ["en-032", "en-029", "en-034"]),
    ("en-040", "en-041", ["en-042", "en-046", "en-051"]),
    ("en-052", "en-053", ["en-054", "en-055", "en-059"]),
]
LABELS = ["recall@1", "recall@5", "recall@10", "MRR@1", "MRR@10", "cos pos − neg"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _invoke(*args: str) -> Result:
    # Wide columns: the table's model headers stay on one line each in the captured output.
    return CliRunner().invoke(main, ["eval", *args], env={"COLUMNS": "220"})


@pytest.fixture(scope="module")
def paraphrase_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = dict(load_demo_corpus())
    path = tmp_path_factory.mktemp("eval") / "paraphrases.jsonl"
    lines = [
        json.dumps({"query": text[q], "pos": [text[p]], "neg": [text[n] for n in negs]})
        for q, p, negs in PARAPHRASES
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_two_models_table_json_and_plot(
    paraphrase_file: Path, minilm_dir: Path, tiny_bge_dir: Path, tmp_path: Path
) -> None:
    out_json, out_png = tmp_path / "eval.json", tmp_path / "plots" / "eval.png"
    result = _invoke(
        "--data",
        str(paraphrase_file),
        "--model",
        str(minilm_dir),
        "--model",
        str(tiny_bge_dir),
        "--json",
        str(out_json),
        "--plot",
        str(out_png),
    )
    assert result.exit_code == 0, result.output
    table = result.stdout
    for label in [*LABELS, "test", "global", minilm_dir.name, tiny_bge_dir.name]:
        assert label in table
    assert "fp32 · 384-d" in table and "fp32 · 1024-d" in table

    report = json.loads(out_json.read_text(encoding="utf-8"))
    assert report["data"] == {
        "source": str(paraphrase_file),
        "queries": 6,
        "passages": 23,  # en-012 is a negative of two queries: embedded once
        "mean_test_pool_size": 4.0,
    }
    models = report["models"]
    assert [m["dimension"] for m in models] == [384, 1024]
    for model in models:
        assert model["texts_embedded"] == 6 + 23 and model["seconds"] > 0
        assert {"manifest_id", "source", "precision", "backend"} <= model.keys()
        for pool in ("test", "global"):
            figures = model["metrics"][pool]
            assert set(figures) == set(METRICS)
            assert all(0.0 <= figures[m] <= 1.0 for m in METRICS if m != "cos_gap")
            assert -2.0 <= figures["cos_gap"] <= 2.0
        assert model["metrics"]["test"]["cos_gap"] == model["metrics"]["global"]["cos_gap"]

    # Real weights on easy paraphrases: chance MRR@10 over 4 candidates is
    # (1 + 1/2 + 1/3 + 1/4) / 4 ≈ 0.52; MiniLM should find almost every paraphrase first.
    minilm = models[0]["metrics"]
    assert minilm["test"]["mrr@10"] >= 0.8
    assert minilm["global"]["recall@10"] >= 0.8
    assert minilm["test"]["cos_gap"] > 0.2

    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_errors_are_clear_before_any_embedding(
    paraphrase_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing_model = _invoke("--data", str(paraphrase_file))
    assert missing_model.exit_code == 2 and "Missing option '--model'" in missing_model.output

    no_manifest = _invoke("--data", str(paraphrase_file), "--model", str(tmp_path))
    assert no_manifest.exit_code == 1 and "embedq_manifest.json not found" in no_manifest.output

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "pos": "not a list", "neg": []}\n', encoding="utf-8")
    bad_data = _invoke("--data", str(bad), "--model", str(tmp_path))
    assert bad_data.exit_code == 1
    assert "line 1: 'pos' must be a list of strings" in bad_data.output

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    plot = _invoke("--data", str(paraphrase_file), "--model", str(tmp_path), "--plot", "x.png")
    assert plot.exit_code == 1 and "embedq[eval]" in plot.output


@pytest.mark.skipif(
    not resources.files("ops").joinpath("data/eval_zh.jsonl").is_file(),
    reason="ops/data/eval_zh.jsonl not shipped yet",
)
def test_shipped_chinese_set_runs_with_minilm(minilm_dir: Path) -> None:
    # MiniLM is English-centric: this checks the shipped file and the plumbing, not quality.
    result = _invoke("--model", str(minilm_dir))
    assert result.exit_code == 0, result.output
    assert "eval_zh.jsonl" in result.stdout
    for label in LABELS:
        assert label in result.stdout
