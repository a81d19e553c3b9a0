"""When a collection's HNSW index is built: at once after a load has drained, one pass later
while a few items are still pending (a load's tail has finished by then; a stream gets it)."""

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


def test_a_table_that_left_the_candidates_starts_over() -> None:
    # Pass 1 saw a tail; pass 2 found a new load (too many pending: not a candidate); pass 3
    # sees a few pending again and must wait one more pass.
    _, remembered = due_now([IndexCandidate("vectors_a", 100)], set())
    _, remembered = due_now([], remembered)
    due, remembered = due_now([IndexCandidate("vectors_a", 100)], remembered)
    assert due == []
    assert remembered == {"vectors_a"}
