"""Halving a cancelled engine turn: the same texts, each half padded to its own longest."""

from __future__ import annotations

import numpy as np

from workers.engine.tokenize import TokenizedText, pad_batch
from workers.engine.turns import EngineTurn, halve


def _turn(lengths_per_batch: list[list[int]]) -> EngineTurn:
    batches, padded, tokens = [], [], []
    index = 0
    for lengths in lengths_per_batch:
        texts = [
            TokenizedText(ids=list(range(100, 100 + n)), type_ids=[0] * n, truncated=False)
            for n in lengths
        ]
        batches.append(list(range(index, index + len(lengths))))
        index += len(lengths)
        padded.append(pad_batch(texts, pad_id=0))
        tokens.append(sum(lengths))
    return EngineTurn(batches, padded, tokens)


def test_halves_keep_every_text_once_with_its_own_tokens() -> None:
    turn = _turn([[3, 4, 6, 9, 12], [20]])
    halves = halve(turn, at_once=1)
    assert [t.batches for t in halves] == [[[0, 1]], [[2, 3, 4]], [[5]]]
    assert all(t.preempted == 1 for t in halves)
    assert [t.tokens for t in halves] == [[7], [27], [20]]
    first_ids, first_mask, _ = halves[0].padded[0]
    assert first_ids.shape == (2, 4)  # padded to its own longest text (4), not the batch's 12
    assert first_mask.sum(axis=1).tolist() == [3, 4]
    original_ids = turn.padded[0][0]
    second_ids = halves[1].padded[0][0]
    assert np.array_equal(second_ids, original_ids[2:5, :12])
    assert second_ids.flags["C_CONTIGUOUS"]


def test_halves_are_grouped_by_streams_and_counted_again() -> None:
    turn = _turn([[3, 4], [5, 6]])
    once = halve(turn, at_once=2)
    assert [t.batches for t in once] == [[[0], [1]], [[2], [3]]]
    # A batch of one text cannot be cut: it runs again as it is, one more preemption counted.
    twice = halve(once[0], at_once=2)
    assert [t.batches for t in twice] == [[[0], [1]]]
    assert twice[0].preempted == 2
