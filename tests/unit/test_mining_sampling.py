"""The pure rules of `embedq mine`: the queries file, ranks after removing positives, the
positive-aware band, and per-line seeded sampling."""

from __future__ import annotations

import pytest

from ops.mining.candidates import plan_search
from ops.mining.lines import QueriesFileError, parse_line
from ops.mining.sampling import (
    Candidate,
    MiningParams,
    band_ceiling,
    choose_negatives,
    parse_range,
    ranked,
)


def _params(**changes: object) -> MiningParams:
    base: dict[str, object] = {
        "rank_first": 2,
        "rank_last": 6,
        "negatives": 3,
        "pos_share": None,
        "pos_margin": None,
        "seed": 1,
    }
    return MiningParams(**{**base, **changes})  # type: ignore[arg-type]


CANDIDATES = [Candidate(f"r{i}", f"text {i}", 0.9 - i * 0.05) for i in range(10)]


def test_parse_range() -> None:
    assert parse_range("2-200") == (2, 200)
    assert parse_range("5-5") == (5, 5)
    for bad in ("0-10", "10-2", "2", "a-b", "-3"):
        with pytest.raises(ValueError):
            parse_range(bad)


def test_ranks_skip_positives_and_copies_of_the_query() -> None:
    ordered = ranked(CANDIDATES, query="text 1", pos_ids={"r0"}, pos_texts={"text 3"})
    assert [c.id for c in ordered][:3] == ["r2", "r4", "r5"]
    # Ties keep a fixed order (by id), whatever order the search returned them in.
    tied = [Candidate("b", "x", 0.5), Candidate("a", "y", 0.5)]
    assert [c.id for c in ranked(tied, "q", set(), set())] == ["a", "b"]


def test_negatives_come_from_the_range_only() -> None:
    ordered = ranked(CANDIDATES, "q", set(), set())
    mined = choose_negatives(ordered, pos_score=1.0, params=_params(negatives=10), line_number=1)
    assert mined.ranks == [2, 3, 4, 5, 6]
    assert [c.id for c in mined.negatives] == ["r1", "r2", "r3", "r4", "r5"]
    assert mined.in_range == 5 and mined.dropped_by_band == 0


def test_the_band_drops_candidates_near_the_positive() -> None:
    ordered = ranked(CANDIDATES, "q", set(), set())
    # pos 0.8: share 0.9 allows <= 0.72 (r4 = 0.70 and below): r1..r3 dropped.
    mined = choose_negatives(ordered, 0.8, _params(pos_share=0.9, negatives=10), 1)
    assert [c.id for c in mined.negatives] == ["r4", "r5"] and mined.dropped_by_band == 3
    assert band_ceiling(0.8, _params(pos_share=0.9, pos_margin=0.2)) == pytest.approx(0.6)
    assert band_ceiling(0.8, _params()) == float("inf")


def test_sampling_is_seeded_per_line() -> None:
    ordered = ranked(CANDIDATES, "q", set(), set())
    params = _params(rank_last=10, negatives=3)
    first = choose_negatives(ordered, 1.0, params, line_number=4)
    assert first == choose_negatives(ordered, 1.0, params, line_number=4)
    assert first.ranks == sorted(first.ranks) and len(first.negatives) == 3
    others = {tuple(choose_negatives(ordered, 1.0, params, n).ranks) for n in range(1, 20)}
    assert len(others) > 1
    reseeded = {tuple(choose_negatives(ordered, 1.0, _params(rank_last=10, seed=s), 4).ranks)
                for s in range(10)}  # fmt: skip
    assert len(reseeded) > 1


def test_query_lines_name_what_is_wrong() -> None:
    line = parse_line(3, '{"query": "q", "pos": ["a"], "id": 7}')
    assert line.pos_texts == ("a",) and line.pos_ids == () and line.row["id"] == 7
    assert parse_line(1, '{"query": "q", "pos_ids": ["r1"]}').pos_ids == ("r1",)
    for text, message in (
        ("not json", "line 5: not JSON"),
        ('{"pos": ["a"]}', "'query' must be a non-empty string"),
        ('{"query": "q"}', "exactly one of the two"),
        ('{"query": "q", "pos": ["a"], "pos_ids": ["b"]}', "exactly one of the two"),
        ('{"query": "q", "pos": []}', "'pos' must be a non-empty list"),
        ('{"query": "q", "pos": ["a", " "]}', "pos[1] must be a non-empty string"),
    ):
        with pytest.raises(QueriesFileError, match=message.replace("[", r"\[")):
            parse_line(5, text)


def test_hnsw_needs_ef_search_to_reach_the_range() -> None:
    assert plan_search(205, exact=False, ef_search=None).ef_search == 205
    assert plan_search(205, exact=False, ef_search=400).ef_search == 400
    with pytest.raises(ValueError, match="pass --exact"):
        plan_search(1005, exact=False, ef_search=None)
    assert plan_search(5000, exact=True, ef_search=None).per_query == 5000
