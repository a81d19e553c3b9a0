"""`embedq eval` metrics on a hand-worked example, and labelled-file validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ops.evaluation import metrics
from ops.evaluation.dataset import DatasetError, parse_eval_lines
from ops.evaluation.metrics import evaluate, evaluate_scores, rank

# Three queries, twelve passages p0..p11 (file order = first appearance = tie-break order).
ROWS = [
    {"query": "q0", "pos": ["p0"], "neg": ["p1", "p2", "p3"]},
    {"query": "q1", "pos": ["p4", "p5"], "neg": ["p6", "p7"]},
    {"query": "q2", "pos": ["p8"], "neg": ["p9", "p10", "p11"]},
]
# Cosines chosen by hand; columns p0 … p11.
SCORES = np.array(
    [
        [0.8, 0.5, 0.3, 0.1, 0.9, 0.2, 0.0, 0.0, 0.85, 0.0, 0.0, 0.0],
        [0.65, 0.3, 0.3, 0.3, 0.6, 0.2, 0.7, 0.1, 0.25, 0.25, 0.0, 0.0],
        [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4, 0.1, 0.1],
    ],
    dtype=np.float32,
)


def _jsonl(rows: list[dict[str, object]]) -> str:
    return "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n"


def test_every_metric_on_both_pools_matches_the_hand_computation() -> None:
    data = parse_eval_lines(_jsonl(ROWS), "hand")
    assert data.passages == [f"p{i}" for i in range(12)]
    assert data.pos_ids == [[0], [4, 5], [8]]
    figures = evaluate_scores(SCORES, data.pos_ids, data.neg_ids)

    # Test pool (each query ranks its own pos + neg):
    #   q0: p0 .8 > p1 .5 > p2 .3 > p3 .1                 → pos at rank 1
    #   q1: p6 .7 > p4 .6 > p5 .2 > p7 .1                 → pos at ranks 2 and 3
    #   q2: p8 .4 = p9 .4 (tie: p8 comes first in file) → pos at rank 1
    # recall@1 = (1 + 0/2 + 1) / 3 = 2/3;  recall@5 = recall@10 = (1 + 2/2 + 1) / 3 = 1
    # MRR@1 = (1 + 0 + 1) / 3 = 2/3;  MRR@10 = (1 + 1/2 + 1) / 3 = 5/6
    assert figures["test"] == pytest.approx(
        {
            "recall@1": 0.6666667,
            "recall@5": 1.0,
            "recall@10": 1.0,
            "mrr@1": 0.6666667,
            "mrr@10": 0.8333333,
            "cos_gap": 0.2333333,
        }
    )
    # Global pool (each query ranks all twelve passages):
    #   q0: p4 .9, p8 .85, p0 .8 …                               → pos at rank 3
    #   q1: p6 .7, p0 .65, p4 .6, p1 p2 p3 .3, p8 p9 .25, p5 .2 … → pos at ranks 3 and 9
    #   q2: p0…p6 .5, then p7 .4 = p8 .4 (tie: p7 first in file)  → pos at rank 9
    # recall@1 = 0;  recall@5 = (1 + 1/2 + 0) / 3 = 1/2;  recall@10 = (1 + 2/2 + 1) / 3 = 1
    # MRR@1 = 0;  MRR@10 = (1/3 + 1/3 + 1/9) / 3 = 7/27 = 0.259259…
    # cos_gap (same for both pools): q0 .8 − (.5+.3+.1)/3 = .5;  q1 (.6+.2)/2 − (.7+.1)/2 = 0;
    #   q2 .4 − (.4+.1+.1)/3 = .2;  mean (.5 + 0 + .2) / 3 = 0.233333…
    assert figures["global"] == pytest.approx(
        {
            "recall@1": 0.0,
            "recall@5": 0.5,
            "recall@10": 1.0,
            "mrr@1": 0.0,
            "mrr@10": 0.2592593,
            "cos_gap": 0.2333333,
        }
    )


def test_ties_rank_in_file_order_whatever_the_candidate_order() -> None:
    scores = np.array([0.3, 0.5, 0.5, 0.1, 0.5], dtype=np.float32)
    candidates = np.array([4, 3, 2, 1, 0], dtype=np.int64)
    assert rank(scores, candidates).tolist() == [1, 2, 4, 0, 3]


def test_vectors_are_scored_by_cosine_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    queries = rng.normal(size=(3, 16)).astype(np.float32)
    passages = rng.normal(size=(12, 16)).astype(np.float32)
    data = parse_eval_lines(_jsonl(ROWS), "random")
    unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    unit_p = passages / np.linalg.norm(passages, axis=1, keepdims=True)
    expected = evaluate_scores(unit_q @ unit_p.T, data.pos_ids, data.neg_ids)
    # Unnormalised vectors (a manifest with normalize false) and one-query blocks change nothing.
    monkeypatch.setattr(metrics, "BLOCK_ROWS", 1)
    result = evaluate(queries * 5.0, passages * 0.2, data.pos_ids, data.neg_ids)
    for pool in ("test", "global"):
        assert result.metrics[pool] == pytest.approx(expected[pool], abs=1e-6)
    assert result.pos_scores.shape == (4,) and result.neg_scores.shape == (8,)
    assert result.pos_scores[0] == pytest.approx(float(unit_q[0] @ unit_p[0]), abs=1e-6)


def test_a_passage_shared_by_queries_is_one_passage() -> None:
    rows = [
        {"query": "a", "pos": ["x", "x"], "neg": ["y"]},
        {"query": "b", "pos": ["y"], "neg": ["x", "z"]},
    ]
    data = parse_eval_lines(_jsonl(rows), "shared")
    assert data.passages == ["x", "y", "z"]
    assert data.pos_ids == [[0], [1]] and data.neg_ids == [[1], [0, 2]]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"query": "q", "pos": ["a"]}', "line 2: missing key 'neg'"),
        ('{"pos": ["a"], "neg": []}', "line 2: missing key 'query'"),
        (
            '{"query": "q", "pos": "a", "neg": []}',
            "line 2: 'pos' must be a list of strings, got str",
        ),
        ('{"query": "q", "pos": [], "neg": ["b"]}', "line 2: 'pos' is empty"),
        ('{"query": "q", "pos": ["a", 3], "neg": []}', "line 2: pos[1] must be a non-empty string"),
        ('{"query": " ", "pos": ["a"], "neg": []}', "line 2: 'query' must be a non-empty string"),
        ('{"query": "q", "pos": ["a"], "neg": ["a"]}', "line 2: passage in both 'pos' and 'neg'"),
        ('["q", ["a"]]', "line 2: expected a JSON object, got list"),
        ('{"query": "q", "pos": ["a"],', "line 2: not valid JSON"),
    ],
)
def test_invalid_lines_are_reported_by_line_and_field(bad_line: str, message: str) -> None:
    text = '{"query": "ok", "pos": ["a"], "neg": ["b"]}\n' + bad_line + "\n"
    with pytest.raises(DatasetError, match="^f.jsonl, " + message.replace("[", r"\[")):
        parse_eval_lines(text, "f.jsonl")


def test_an_empty_file_is_an_error() -> None:
    with pytest.raises(DatasetError, match="no labelled queries"):
        parse_eval_lines("\n\n", "empty.jsonl")
