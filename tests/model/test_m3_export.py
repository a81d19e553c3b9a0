"""export-model on a BGE-M3-shaped checkpoint (random weights, built in the tests) against a
torch reference computed the way FlagEmbedding's M3 embedder computes it, and the engine on
long inputs. Figures show fidelity and plumbing, nothing about BGE-M3's quality."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from embedq_core.manifest import ModelManifest
from ops.cli.main import main
from tests.exact_words import exact_word_texts
from tests.support import engine_config
from workers.engine import Embedder
from workers.engine.batching import plan_batches

TEXTS = [
    *exact_word_texts()[:12],
    "charger charger warranty charger",  # a repeated token: its weights are max-pooled
    "明天会下雨吗？",
]


def flag_reference(
    source: Path, texts: list[str], max_length: int = 8192
) -> tuple[np.ndarray, list[dict[int, float]]]:
    """Dense (CLS, normalised) and lexical weights as FlagEmbedding's M3Embedder gives them:
    relu(sparse_linear(last_hidden_state)), per token id the max weight > 0, with the
    tokenizer's cls, eos, pad and unk tokens dropped; one padded batch."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval()
    head = torch.nn.Linear(model.config.hidden_size, 1)
    head.load_state_dict(torch.load(source / "sparse_linear.pt", map_location="cpu"))
    unused = {
        tokenizer.convert_tokens_to_ids(tokenizer.special_tokens_map[name])
        for name in ("cls_token", "eos_token", "pad_token", "unk_token")
        if name in tokenizer.special_tokens_map
    }
    with torch.no_grad():
        batch = tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        hidden = model(**batch).last_hidden_state
        dense = torch.nn.functional.normalize(hidden[:, 0], dim=-1).numpy()
        weights = torch.relu(head(hidden)).squeeze(-1).numpy()
    lexical = []
    for row, ids in zip(weights, batch["input_ids"].tolist(), strict=True):
        result: dict[int, float] = defaultdict(float)
        for w, token in zip(row, ids, strict=True):
            if token not in unused and w > 0 and w > result[token]:
                result[token] = float(w)
        lexical.append(dict(result))
    return dense, lexical


def test_manifest_and_graph_say_dense_plus_sparse(tiny_m3_dir: Path, tiny_m3_source: Path) -> None:
    import onnx

    manifest = ModelManifest.read(tiny_m3_dir)
    graph = onnx.load(str(tiny_m3_dir / manifest.onnx_file)).graph
    assert [o.name for o in graph.output] == ["dense", "sparse_weights"]
    assert manifest.sparse and manifest.pooled_output and manifest.pooling == "cls"
    assert (manifest.output_name, manifest.sparse_output_name) == ("dense", "sparse_weights")
    assert manifest.sparse_dropped_token_ids == [0, 1, 2, 3]  # <s>, <pad>, </s>, <unk>
    assert manifest.max_length == 8192 and manifest.normalize and manifest.dimension == 32
    from transformers import AutoConfig

    assert manifest.vocab_size == AutoConfig.from_pretrained(tiny_m3_source).vocab_size
    assert not (tiny_m3_dir / "colbert_linear.pt").exists()


def test_engine_matches_flag_reference(tiny_m3_dir: Path, tiny_m3_source: Path) -> None:
    dense, lexical = flag_reference(tiny_m3_source, TEXTS)
    embedder = Embedder.from_model_dir(tiny_m3_dir, engine_config(runtime="onnxruntime-cpu"))
    result = embedder.embed(TEXTS)
    cosines = (dense * result.vectors).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines
    assert result.sparse is not None
    for ours, theirs in zip(result.sparse, lexical, strict=True):
        assert set(ours) == set(theirs)
        assert max(abs(ours[t] - theirs[t]) for t in theirs) <= 1e-4
    repeated = result.sparse[TEXTS.index("charger charger warranty charger")]
    assert len(repeated) == 2  # "▁charger" three times, one entry: its largest weight


@pytest.mark.parametrize(
    "changes",
    [{}, {"runtime": "openvino", "streams": 2, "max_batch_size": 2}],
    ids=["default", "openvino-2-streams-2-per-batch"],
)
def test_default_runtime_agrees(
    tiny_m3_dir: Path, tiny_m3_source: Path, changes: dict[str, object]
) -> None:
    """The runtime a worker picks on this machine (OpenVINO BF16 where AMX is present) runs both
    outputs too; BF16 keeps the same tokens and weights close. With two streams and batches of
    two, texts run two batches at a time and each keeps its own dense and sparse outputs."""
    dense, lexical = flag_reference(tiny_m3_source, TEXTS)
    result = Embedder.from_model_dir(tiny_m3_dir, engine_config(**changes)).embed(TEXTS)
    assert (dense * result.vectors).sum(axis=1).min() >= 0.99
    assert result.sparse is not None
    for ours, theirs in zip(result.sparse, lexical, strict=True):
        assert set(ours) == set(theirs)
        assert max(abs(ours[t] - theirs[t]) for t in theirs) <= 0.05


def test_long_texts_batch_alone_and_embed_at_8192_tokens(
    tiny_m3_dir: Path, tiny_m3_source: Path
) -> None:
    assert plan_batches([8192, 12, 9, 2048, 8192, 15], 1024, 32) == [[2, 1, 5], [3], [0], [4]]
    long_text = " ".join(exact_word_texts()) * 3  # well past 8,192 tokens
    config = engine_config(runtime="onnxruntime-cpu", max_batch_tokens=1024)
    embedder = Embedder.from_model_dir(tiny_m3_dir, config)
    result = embedder.embed([TEXTS[0], long_text, TEXTS[1]])
    assert result.token_counts[1] == 8192 and result.truncated == [False, True, False]
    alone = embedder.embed([TEXTS[0], TEXTS[1]])
    np.testing.assert_allclose(result.vectors[[0, 2]], alone.vectors, atol=1e-6)
    dense, lexical = flag_reference(tiny_m3_source, [long_text])
    assert float(dense[0] @ result.vectors[1]) >= 0.9999
    assert result.sparse is not None and set(result.sparse[1]) == set(lexical[0])


def test_export_model_command(tiny_m3_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-m3"
    result = CliRunner().invoke(main, ["export-model", str(tiny_m3_source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = ModelManifest.read(out)
    assert manifest.sparse and "exported" in result.output
    refused = CliRunner().invoke(
        main, ["export-model", str(tiny_m3_source), "--out", str(out), "--quantize", "int8"]
    )
    assert refused.exit_code != 0 and "INT8" in str(refused.exception or refused.output)
