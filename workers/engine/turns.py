"""Engine turns: the padded batches run together (one per stream), and the same work cut in
halves when a live query cancelled it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.engine.runtime import Padded


@dataclass(frozen=True)
class EngineTurn:
    """Engine batches run together: each batch's text indices, its padded input_ids,
    attention_mask and token_type_ids, its real token count, and how many times this work was
    cancelled for live queries."""

    batches: list[list[int]]
    padded: list[Padded]
    tokens: list[int]
    preempted: int = 0


def halve(turn: EngineTurn, at_once: int) -> list[EngineTurn]:
    """The turn's work again, each batch of two or more texts cut in two (each half padded to
    its own longest text), grouped in turns of at_once batches, one more preemption counted.

    A batch's rows are in length order, so the first half is the shorter one."""
    pieces: list[tuple[list[int], Padded]] = []
    for batch, padded in zip(turn.batches, turn.padded, strict=True):
        if len(batch) < 2:
            pieces.append((batch, padded))
            continue
        half = len(batch) // 2
        pieces.append((batch[:half], _rows(padded, 0, half)))
        pieces.append((batch[half:], _rows(padded, half, len(batch))))
    return [
        EngineTurn(
            [batch for batch, _ in group],
            [padded for _, padded in group],
            [int(padded[1].sum()) for _, padded in group],
            turn.preempted + 1,
        )
        for group in (pieces[k : k + at_once] for k in range(0, len(pieces), at_once))
    ]


def _rows(padded: Padded, start: int, stop: int) -> Padded:
    input_ids, attention_mask, token_type_ids = padded
    width = int(attention_mask[start:stop].sum(axis=1).max())  # right-padded rows
    return (
        np.ascontiguousarray(input_ids[start:stop, :width]),
        np.ascontiguousarray(attention_mask[start:stop, :width]),
        np.ascontiguousarray(token_type_ids[start:stop, :width]),
    )
