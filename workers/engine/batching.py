"""Length-sorted batching under a token budget."""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(
    lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int
) -> list[list[int]]:
    """Group indices into batches of similar length.

    Indices are sorted by token length so padding is small; a batch is cut when its padded size
    (count x longest) would pass max_batch_tokens or its count would pass max_batch_size. A text
    longer than the budget on its own still gets a batch of one.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # Sorted ascending, so this text is the longest of the batch if added.
        padded_tokens = (len(current) + 1) * lengths[index]
        if current and (len(current) >= max_batch_size or padded_tokens > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def padding_ratio(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of computed token slots that are padding (0 = none)."""
    real = sum(lengths)
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches if batch)
    return 0.0 if padded == 0 else 1.0 - real / padded
