"""The engine's one configuration object, built from the settings wherever an engine is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from workers.engine.backend_choice import RuntimeChoice

if TYPE_CHECKING:
    from embedq_core.settings import Settings


@dataclass(frozen=True)
class EngineConfig:
    """How an engine runs: which runtime, how many threads and streams, how large its batches
    may be.

    No defaults here: the settings hold them. A caller that needs a different runtime or batch
    size (a test, a benchmark variant) replaces that field with `dataclasses.replace`."""

    runtime: RuntimeChoice
    intra_op_threads: int
    streams: int  # batches run at once (OpenVINO streams); 1: one batch on every thread
    max_batch_tokens: int
    max_batch_size: int
    max_preemptions_per_batch: int  # times a live query may cancel one bulk batch

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        """The engine configuration the settings describe."""
        return cls(
            runtime=settings.runtime,
            intra_op_threads=settings.intra_op_threads,
            streams=settings.engine_streams,
            max_batch_tokens=settings.max_batch_tokens,
            max_batch_size=settings.max_batch_size,
            max_preemptions_per_batch=settings.max_preemptions_per_batch,
        )
