"""Where an interrupted `embedq mine` goes on from: a small JSON file beside the output with
what the run was asked (input digest, collection, model, parameters) and how far it got (input
lines consumed, output bytes written and synced). A rerun with the same request truncates the
output to those bytes and continues; the per-line seeding makes the result the same as an
uninterrupted run's. The file is removed when the run completes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO


class ResumeRefused(RuntimeError):
    """The output exists but was not written by an unfinished run of the same request."""


@dataclass
class Position:
    """Input lines consumed and output bytes kept so far."""

    lines_done: int = 0
    bytes_done: int = 0


def state_path(out: Path) -> Path:
    """The resume file of an output file."""
    return out.with_name(out.name + ".mine-state.json")


def open_output(out: Path, request: dict[str, Any], overwrite: bool) -> tuple[BinaryIO, Position]:
    """The output opened for appending where the last run of this request stopped (or from
    the start), and how far that was."""
    state = state_path(out)
    if state.exists() and out.exists() and not overwrite:
        saved = json.loads(state.read_text(encoding="utf-8"))
        if saved.get("request") != request:
            raise ResumeRefused(
                f"{out} belongs to an unfinished run with other inputs or parameters "
                f"(see {state}): rerun that, or pass --overwrite to start again"
            )
        position = Position(int(saved["lines_done"]), int(saved["bytes_done"]))
        handle: BinaryIO = out.open("r+b")
        handle.truncate(position.bytes_done)
        handle.seek(position.bytes_done)
        return handle, position
    if out.exists() and not overwrite:
        raise ResumeRefused(f"{out} exists: pass --overwrite to replace it")
    handle = out.open("wb")
    save(out, request, Position())
    return handle, Position()


def save(out: Path, request: dict[str, Any], position: Position) -> None:
    """Record position atomically (after the output's bytes are synced)."""
    state = state_path(out)
    tmp = state.with_name(state.name + ".tmp")
    tmp.write_text(
        json.dumps(
            {
                "request": request,
                "lines_done": position.lines_done,
                "bytes_done": position.bytes_done,
            },
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
    os.replace(tmp, state)


def checkpoint(handle: BinaryIO, out: Path, request: dict[str, Any], position: Position) -> None:
    """Sync what was written, then record it."""
    handle.flush()
    os.fsync(handle.fileno())
    position.bytes_done = handle.tell()
    save(out, request, position)


def finish(out: Path) -> None:
    """The run is complete: nothing to resume."""
    state_path(out).unlink(missing_ok=True)
