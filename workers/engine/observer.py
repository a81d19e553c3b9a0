"""What the engine reports about its own work, to whoever watches (a worker's metrics).

The engine knows nothing about Prometheus: it calls an observer, which does nothing unless a
worker installs one (workers/telemetry/metrics.py), so benchmarks and the CLI pay nothing for it.
"""

from __future__ import annotations

from typing import Protocol


class EngineObserver(Protocol):
    """Called by Embedder.embed from the thread that embeds."""

    def prepared(self, texts: int, seconds: float, urgent: bool) -> None:
        """Texts were tokenised and padded into engine batches, in `seconds` all told."""

    def engine_batch(
        self, texts: int, tokens: int, padded_tokens: int, seconds: float, urgent: bool
    ) -> None:
        """One engine batch ran (inference, pooling, normalisation): `tokens` real tokens in
        `padded_tokens` computed slots."""

    def preempted(self, seconds: float) -> None:
        """A bulk engine turn was cancelled for a live query after `seconds` of work, lost."""


class NoObserver:
    """The default: records nothing."""

    def prepared(self, texts: int, seconds: float, urgent: bool) -> None:
        """Nothing to record."""

    def engine_batch(
        self, texts: int, tokens: int, padded_tokens: int, seconds: float, urgent: bool
    ) -> None:
        """Nothing to record."""

    def preempted(self, seconds: float) -> None:
        """Nothing to record."""
