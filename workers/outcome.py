"""What one delivery of a batch did."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchOutcome:
    """What one delivery of a batch did. `done` counts unchanged and superseded items too;
    `written_behind`: the write was handed to the writer thread, which ends the batch."""

    done: int
    failed: int
    unchanged: int = 0
    superseded: int = 0
    skipped_reason: str | None = None
    written_behind: bool = False
