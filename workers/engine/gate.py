"""One engine run at a time per worker, with live queries served before bulk batches."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class EngineGate:
    """Serialises engine runs between the bulk (Celery) thread and the query thread.

    A bulk caller that finds an urgent caller waiting steps aside, so a live query waits for
    at most the one engine batch in progress, never for the rest of a bulk job. Runtimes may
    hand back views of their output buffers, so the whole run + pooling happens inside it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0

    @contextmanager
    def turn(self, urgent: bool) -> Iterator[None]:
        """Hold the engine for one batch; urgent callers go first."""
        with self._cond:
            if urgent:
                self._urgent_waiting += 1
            try:
                while self._busy or (not urgent and self._urgent_waiting > 0):
                    self._cond.wait()
            finally:
                if urgent:
                    self._urgent_waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
