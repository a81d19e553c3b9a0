"""Cross-encoder export: the ONNX graph scores pairs as FlagEmbedding's reranker does on
torch (logits equal to 1e-4), for BERT- and XLM-R-shaped models, at 512 and 8,192 tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedq_core.manifest import ModelManifest
from embedq_core.query_protocol import relevance
from ops.data.corpus import load_demo_corpus
from ops.export.model import ExportOptions, export_model
from ops.export.quantize import QualityGateFailed
from tests.reranker_models import build_bert_reranker, build_xlmr_reranker, reference_logits
from tests.support import engine_config
from workers.engine import Reranker

TEXTS = [text for _, text in load_demo_corpus()]
QUERY = "明天会下雨吗？"


def _pairs(long_passage: str) -> list[tuple[str, str]]:
    return [(QUERY, TEXTS[i]) for i in range(0, 40, 3)] + [
        (QUERY, long_passage),
        (TEXTS[5] * 40, TEXTS[9]),
    ]


@pytest.fixture(scope="module")
def bert_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    source = build_bert_reranker(tmp_path_factory.mktemp("src") / "bert-reranker", TEXTS)
    out = tmp_path_factory.mktemp("onnx") / "bert-reranker"
    export_model(str(source), out, ExportOptions(), engine_config())
    return source, out


@pytest.fixture(scope="module")
def xlmr_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    source = build_xlmr_reranker(tmp_path_factory.mktemp("src") / "xlmr-reranker", TEXTS)
    out = tmp_path_factory.mktemp("onnx") / "xlmr-reranker"
    export_model(str(source), out, ExportOptions(), engine_config())
    return source, out


def test_the_manifest_says_reranker_with_the_model_length(
    bert_export: tuple[Path, Path], xlmr_export: tuple[Path, Path]
) -> None:
    bert = ModelManifest.read(bert_export[1])
    xlmr = ModelManifest.read(xlmr_export[1])
    assert (bert.kind, bert.dimension, bert.max_length, bert.normalize) == (
        "reranker",
        1,
        512,
        True,
    )
    assert (xlmr.kind, xlmr.max_length) == ("reranker", 8192)
    assert bert.manifest_id != xlmr.manifest_id and "-fp32-" in bert.manifest_id


@pytest.mark.parametrize("shape", ["bert", "xlmr"])
def test_scores_equal_the_torch_reference(
    shape: str, bert_export: tuple[Path, Path], xlmr_export: tuple[Path, Path]
) -> None:
    source, out = bert_export if shape == "bert" else xlmr_export
    manifest = ModelManifest.read(out)
    # Longer than the model reads: the passage is cut so the pair fits (8,192 tokens for XLM-R).
    long_passage = " ".join(TEXTS) * (2 if shape == "bert" else 12)
    pairs = _pairs(long_passage)
    reranker = Reranker.from_model_dir(out, engine_config(runtime="onnxruntime-cpu"))
    result = reranker.score(pairs[0][0], [p for q, p in pairs if q == QUERY])
    odd = reranker.score(pairs[-1][0], [pairs[-1][1]])
    ours = np.concatenate([result.logits, odd.logits])
    reference = np.array(reference_logits(source, pairs, manifest.max_length), dtype=np.float32)
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)
    assert len(set(np.round(reference, 3))) > 5, "random logits should differ across pairs"
    assert result.truncated[-1] and not result.truncated[0]
    assert max(result.token_counts) == manifest.max_length
    sigmoid = relevance(result.logits, normalize=True)
    assert np.all((sigmoid > 0) & (sigmoid < 1))
    assert list(np.argsort(-sigmoid)) == list(np.argsort(-result.logits))


def test_int8_for_rerankers_is_openvinos_behind_the_rerankers_gate(
    bert_export: tuple[Path, Path], tmp_path: Path
) -> None:
    source = str(bert_export[0])
    with pytest.raises(ValueError, match="use --quantize int8-openvino"):
        export_model(source, tmp_path / "ort", ExportOptions(quantize="int8"), engine_config())
    # A gate nothing passes (no score error at all): refused, the directory stays FP32.
    strict = ExportOptions(quantize="int8-openvino", int8_max_score_error=0.0)
    with pytest.raises(QualityGateFailed, match="score error"):
        export_model(source, tmp_path / "strict", strict, engine_config())
    assert ModelManifest.read(tmp_path / "strict").precision == "fp32"
    kept = ExportOptions(quantize="int8-openvino", force=True)
    manifest = export_model(source, tmp_path / "int8", kept, engine_config())
    assert manifest.is_reranker and manifest.precision == "int8-openvino"
    assert 0.5 <= manifest.quality["pair_agreement_vs_fp32"] <= 1.0
    assert 0.0 < manifest.quality["mean_score_error_vs_fp32"] < 0.5
    reranker = Reranker.from_model_dir(tmp_path / "int8", engine_config())
    assert reranker.backend == "openvino-int8"
    scores = reranker.score(QUERY, TEXTS[:8]).logits
    assert np.all(np.isfinite(scores)) and len(set(np.round(scores, 3))) > 3


def test_eval_adds_a_reranked_row_per_model(
    bert_export: tuple[Path, Path], minilm_dir: Path, tmp_path: Path
) -> None:
    """`embedq eval --rerank`: the reranked row's test pool is the reranker's own order of each
    query's pos + neg (checked against the torch reference), its global pool re-orders the
    retriever's candidates. With a random-weight reranker the figures claim nothing."""
    from click.testing import CliRunner

    from ops.cli.main import main
    from ops.evaluation.dataset import load_eval_set

    source, out = bert_export
    report = tmp_path / "eval.json"
    result = CliRunner().invoke(
        main,
        ["eval", "--model", str(minilm_dir), "--rerank", str(out), "--json", str(report)],
        env={"COLUMNS": "220", "EMBEDQ_RUNTIME": "onnxruntime-cpu"},  # FP32, as the reference
    )
    assert result.exit_code == 0, result.output
    models = json.loads(report.read_text())["models"]
    assert [m["reranker"] for m in models] == [None, ModelManifest.read(out).manifest_id]
    assert models[1]["rerank_candidates"] == 20
    eval_set = load_eval_set()
    pairs = [
        (query, eval_set.passages[i])
        for line, query in enumerate(eval_set.queries)
        for i in [*eval_set.pos_ids[line], *eval_set.neg_ids[line]]
    ]
    logits = iter(reference_logits(source, pairs, 512))
    top1 = []
    for line in range(len(eval_set.queries)):
        own = [*eval_set.pos_ids[line], *eval_set.neg_ids[line]]
        scores = [next(logits) for _ in own]
        top1.append(float(own[int(np.argmax(scores))] in eval_set.pos_ids[line]))
    reranked = models[1]["metrics"]
    assert reranked["test"]["recall@1"] == pytest.approx(np.mean(top1), abs=1e-6)
    assert reranked["test"] != models[0]["metrics"]["test"]
    assert 0.0 <= reranked["global"]["mrr@10"] <= 1.0
    assert "+ rerank" in result.output
