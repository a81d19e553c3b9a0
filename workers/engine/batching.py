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


def plan_turns(
    lengths: Sequence[int], batches: list[list[int]], at_once: int
) -> list[list[list[int]]]:
    """Group length-sorted batches into engine turns of at_once batches (one per stream).

    A short last turn would leave streams idle while it runs (each stream has only its share
    of the threads), so its batch with the most padded slots is halved until every stream has
    one, or no batch has two texts left. Batches keep their order within a turn."""
    turns = [batches[k : k + at_once] for k in range(0, len(batches), at_once)]
    if not turns:
        return turns
    last = turns[-1]  # a new list: halving replaces its batches, never edits `batches`
    while len(last) < at_once:
        splittable = [b for b in last if len(b) > 1]
        if not splittable:
            break
        widest = max(splittable, key=lambda b: padded_slots(lengths, b))
        at = last.index(widest)
        half = len(widest) // 2
        last[at : at + 1] = [widest[:half], widest[half:]]
    return turns


def padded_slots(lengths: Sequence[int], batch: Sequence[int]) -> int:
    """Token slots the engine computes for a batch: its count x its longest text."""
    return len(batch) * max(lengths[i] for i in batch) if batch else 0


def padding_ratio(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of computed token slots that are padding (0 = none)."""
    real = sum(lengths)
    padded = sum(padded_slots(lengths, batch) for batch in batches)
    return 0.0 if padded == 0 else 1.0 - real / padded
