"""The write rule: newest submission wins, unchanged text keeps its vector."""

from __future__ import annotations

from workers.delivery.rows import Action, StoredRow, decide

MODEL = "model-a"
HASH = b"\x01" * 32
OTHER_HASH = b"\x02" * 32


def test_a_new_id_is_written() -> None:
    assert decide(5, HASH, None, MODEL) is Action.WRITE


def test_an_older_submission_never_replaces_a_newer_row() -> None:
    # Same text or not: the stored row came from a later submission.
    assert decide(5, HASH, StoredRow(6, HASH, MODEL), MODEL) is Action.SUPERSEDED
    assert decide(5, OTHER_HASH, StoredRow(6, HASH, MODEL), MODEL) is Action.SUPERSEDED


def test_same_text_and_model_keeps_the_vector() -> None:
    assert decide(7, HASH, StoredRow(6, HASH, MODEL), MODEL) is Action.UNCHANGED
    assert decide(6, HASH, StoredRow(6, HASH, MODEL), MODEL) is Action.UNCHANGED


def test_new_text_or_another_model_is_embedded_again() -> None:
    assert decide(7, OTHER_HASH, StoredRow(6, HASH, MODEL), MODEL) is Action.WRITE
    assert decide(7, HASH, StoredRow(6, HASH, "model-b"), MODEL) is Action.WRITE
    # Rows from before submission order existed hold seq 0: any submission replaces them.
    assert decide(1, OTHER_HASH, StoredRow(0, HASH, MODEL), MODEL) is Action.WRITE
