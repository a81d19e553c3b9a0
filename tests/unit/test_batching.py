from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.engine.batching import padding_ratio, plan_batches, plan_turns


def test_batches_are_length_sorted_and_cut_by_token_budget() -> None:
    lengths = [10, 200, 12, 11, 190, 9]
    batches = plan_batches(lengths, max_batch_tokens=400, max_batch_size=8)
    assert batches == [[5, 0, 3, 2], [4, 1]]
    assert padding_ratio(lengths, batches) < 0.1


def test_count_cap_applies_before_the_token_budget() -> None:
    assert plan_batches([5] * 5, max_batch_tokens=10_000, max_batch_size=2) == [[0, 1], [2, 3], [4]]


def test_a_text_over_the_budget_still_gets_a_batch_of_its_own() -> None:
    assert plan_batches([1000, 3], max_batch_tokens=100, max_batch_size=8) == [[1], [0]]


@given(
    st.lists(st.integers(min_value=1, max_value=512), max_size=200),
    st.integers(min_value=16, max_value=4096),
    st.integers(min_value=1, max_value=64),
)
def test_every_index_once_and_budgets_hold(lengths: list[int], budget: int, size: int) -> None:
    batches = plan_batches(lengths, budget, size)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= size
        if len(batch) > 1:
            assert len(batch) * max(lengths[i] for i in batch) <= budget


def test_one_stream_runs_each_batch_as_its_own_turn() -> None:
    assert plan_turns([5] * 5, [[0, 1], [2, 3], [4]], at_once=1) == [[[0, 1]], [[2, 3]], [[4]]]


def test_a_short_last_turn_halves_its_widest_batch_to_fill_the_streams() -> None:
    lengths = [5, 5, 5, 5, 9, 9, 9, 9]
    turns = plan_turns(lengths, [[0, 1], [2, 3], [4, 5, 6, 7]], at_once=2)
    assert turns == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    # Four streams, one batch of three texts: halved, then the two-text half halved again.
    assert plan_turns([7, 8, 9], [[0, 1, 2]], at_once=4) == [[[0], [1], [2]]]


def test_a_single_text_is_not_split() -> None:
    assert plan_turns([40], [[0]], at_once=2) == [[[0]]]
    assert plan_turns([], [], at_once=2) == []


@given(
    st.lists(st.integers(min_value=1, max_value=512), max_size=200),
    st.integers(min_value=1, max_value=64),
    st.integers(min_value=1, max_value=4),
)
def test_turns_keep_every_index_once_and_fill_the_streams(
    lengths: list[int], size: int, at_once: int
) -> None:
    batches = plan_batches(lengths, 4096, size)
    turns = plan_turns(lengths, batches, at_once)
    flat = [i for turn in turns for batch in turn for i in batch]
    assert flat == [i for batch in batches for i in batch]
    assert all(0 < len(turn) <= at_once for turn in turns)
    whole = len(turns[:-1]) * at_once
    assert turns[:-1] == [batches[k : k + at_once] for k in range(0, whole, at_once)]
    if turns and len(turns[-1]) < at_once:
        assert all(len(batch) == 1 for batch in turns[-1])
