"""When a collection's HNSW index is built: at once after a load has drained; with a few items
still pending, on the second pass that finds it so (a load's tail has usually finished by then;
a stream gets it)."""

from __future__ import annotations

from embedq_core.collection_index import IndexCandidate, due_now


def test_a_drained_collection_is_built_on_the_first_pass() -> None:
    due, remembered = due_now([IndexCandidate("vectors_a", 0)], set())
    assert due == ["vectors_a"]
    assert remembered == set()


def test_a_few_pending_items_wait_one_pass() -> None:
    # First pass: the last batches of a bulk load, or a stream; no build yet.
    due, remembered = due_now([IndexCandidate("vectors_a", 200)], set())
    assert due == []
    assert remembered == {"vectors_a"}
    # Second pass: still a few pending (a stream that never drains): built now.
    due, remembered = due_now([IndexCandidate("vectors_a", 3)], remembered)
    assert due == ["vectors_a"]


def test_a_stream_that_crosses_the_bound_between_passes_is_still_built() -> None:
    # Pass 1 sees a few pending; pass 2 finds too many (not a candidate); pass 3 sees a few
    # again: built, or a stream in step with the poll would never get its index.
    _, seen = due_now([IndexCandidate("vectors_a", 100)], set())
    _, seen = due_now([], seen)
    due, seen = due_now([IndexCandidate("vectors_a", 100)], seen)
    assert due == ["vectors_a"]


def test_each_table_waits_for_its_own_second_pass() -> None:
    due, seen = due_now([IndexCandidate("vectors_a", 5)], set())
    due, seen = due_now([IndexCandidate("vectors_a", 5), IndexCandidate("vectors_b", 5)], seen)
    assert due == ["vectors_a"]
    assert seen == {"vectors_a", "vectors_b"}
