"""Whether this worker's consumer holds a task, for its row in worker_presence.

Celery's signals say when the consumer starts and ends a task (the solo pool runs tasks on the
consumer's thread) and when it starts or stops consuming; the reconciler's thread reports it
every reconcile interval (embedq_core/lifecycle/presence.py says what the reconciler reads
from it). Not idle until Celery reports the worker ready, and again once it starts stopping.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class ConsumerIdle:
    """Since when (monotonic) the consumer has held no task while consuming; None otherwise."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle_since: float | None = None

    def busy(self, **_: Any) -> None:
        """A task started, or the worker stopped consuming."""
        with self._lock:
            self._idle_since = None

    def idle(self, **_: Any) -> None:
        """A task ended, or the worker started consuming."""
        with self._lock:
            self._idle_since = time.monotonic()

    def idle_for_s(self) -> float | None:
        """Seconds the consumer has held no task (None: it holds one, or is not consuming)."""
        with self._lock:
            since = self._idle_since
        return None if since is None else time.monotonic() - since

    def connect(self) -> None:
        """Follow the consumer through Celery's signals."""
        from celery import signals

        signals.task_prerun.connect(self.busy, weak=False)
        signals.task_postrun.connect(self.idle, weak=False)
        signals.worker_ready.connect(self.idle, weak=False)
        signals.worker_shutting_down.connect(self.busy, weak=False)
