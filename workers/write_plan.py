"""Deciding what a batch's item does to its vector row: write it, keep the vector, or nothing.

The same rule runs twice per batch: before embedding, on an unlocked read, to skip embedding
what will not be written; and inside the write transaction, on rows locked FOR UPDATE, where
the decision is final.
"""

from __future__ import annotations

from enum import Enum

from workers.writer import StoredRow


class Action(Enum):
    """What one item does to the stored row of its id."""

    WRITE = "write"  # embed and upsert
    UNCHANGED = "unchanged"  # same text and model: keep the vector, take the metadata
    SUPERSEDED = "superseded"  # a newer submission of the id is stored: write nothing


def decide(seq: int, content_hash: bytes, stored: StoredRow | None, manifest_id: str) -> Action:
    """The action for an item with this submission order and text hash, given the stored row."""
    if stored is None:
        return Action.WRITE
    if stored.seq > seq:
        return Action.SUPERSEDED
    if stored.content_hash == content_hash and stored.manifest_id == manifest_id:
        return Action.UNCHANGED
    return Action.WRITE
