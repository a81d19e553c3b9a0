"""The pipeline bench's summary of repeated runs: the median ratio of each repeated variant."""

from __future__ import annotations

import pytest

from ops.bench.pipeline_variants import bench_variants, median_ratios


def test_the_median_of_three_runs_is_the_middle_one_and_single_runs_are_left_out() -> None:
    medians = median_ratios(
        [("behind", 0.95), ("inline", 0.90), ("behind", 0.83), ("behind", 0.99), ("ix", 0.8)]
    )
    # Not the mean (0.923): the middle of 0.83, 0.95, 0.99.
    assert medians == {"behind": (3, pytest.approx(0.95))}


def test_repeated_sets_reverse_their_order_each_run() -> None:
    variants = bench_variants(hnsw_variants=False, small_jobs=None, repeat=3, streams=True)
    inline, behind, ahead, tokenise, streams = (
        (False, True, None, None),
        (True, False, None, None),
        (True, True, None, None),
        (True, True, None, True),
        (True, True, 2, None),
    )
    assert [
        (v.write_behind, v.claim_ahead, v.engine_streams, v.tokenise_ahead) for v in variants
    ] == [
        *(inline, behind, ahead, tokenise, streams),
        *(streams, tokenise, ahead, behind, inline),
        *(inline, behind, ahead, tokenise, streams),
    ]
    assert len({v.collection for v in variants}) == 15
    assert {v.group for v in variants} == {
        "whole path, write in line, new collection",
        "whole path, write behind the engine, new collection",
        "whole path, claim ahead, write behind, new collection",
        "whole path, claim ahead, write behind, tokenise ahead, new collection",
        "whole path, claim ahead, write behind, 2 engine streams, new collection",
    }


def test_the_streams_variant_runs_only_where_the_engine_is_openvino() -> None:
    variants = bench_variants(hnsw_variants=False, small_jobs=None, repeat=2, streams=False)
    assert len(variants) == 8
    assert all(v.engine_streams is None for v in variants)
