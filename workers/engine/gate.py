"""One engine run at a time per worker, with live queries served before bulk batches."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class EngineGate:
    """Serialises engine runs between the bulk (Celery) thread and the query thread.

    A bulk caller that finds an urgent caller waiting steps aside, so a live query waits for
    at most the one engine turn in progress (one batch, or one per stream run together), never
    for the rest of a bulk job. Turns alternate while both kinds wait, so a stream of large
    live requests cannot starve bulk work (and run a batch into the worker's time limit): bulk
    keeps at least every other turn. Runtimes may hand back views of their output buffers, so
    the whole run + pooling happens inside it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0
        self._bulk_waiting = 0
        self._last_urgent = False

    def _my_turn(self, urgent: bool) -> bool:
        # Called with the lock held, self counted among the waiters.
        if urgent:
            return not (self._last_urgent and self._bulk_waiting > 0)
        return self._urgent_waiting == 0 or self._last_urgent

    @contextmanager
    def turn(self, urgent: bool) -> Iterator[None]:
        """Hold the engine for one turn; urgent callers go first."""
        with self._cond:
            if urgent:
                self._urgent_waiting += 1
            else:
                self._bulk_waiting += 1
            try:
                while self._busy or not self._my_turn(urgent):
                    self._cond.wait()
            finally:
                if urgent:
                    self._urgent_waiting -= 1
                else:
                    self._bulk_waiting -= 1
            self._busy = True
            self._last_urgent = urgent
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
