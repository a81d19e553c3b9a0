"""One engine run at a time per worker, with live queries served before bulk batches."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from workers.engine.cancellation import Cancellation


class EngineGate:
    """Serialises engine runs between the bulk (Celery) thread and the query thread.

    A bulk caller that finds an urgent caller waiting steps aside, so a live query waits for
    at most the one engine turn in progress (one batch, or one per stream run together), never
    for the rest of a bulk job. Turns alternate while both kinds wait, so a stream of large
    live requests cannot starve bulk work (and run a batch into the worker's time limit): bulk
    keeps at least every other turn. Runtimes may hand back views of their output buffers, so
    the whole run + pooling happens inside it.

    A bulk turn taken with a Cancellation is preemptible: an urgent caller arriving while it
    runs cancels it, so the query waits for no bulk batch at all (the bulk caller runs its
    work again, smaller: Embedder.run).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0
        self._bulk_waiting = 0
        self._last_urgent = False
        self._running: Cancellation | None = None  # the preemptible bulk turn in progress

    def _my_turn(self, urgent: bool) -> bool:
        # Called with the lock held, self counted among the waiters.
        if urgent:
            return not (self._last_urgent and self._bulk_waiting > 0)
        return self._urgent_waiting == 0 or self._last_urgent

    @contextmanager
    def turn(self, urgent: bool, cancellation: Cancellation | None = None) -> Iterator[None]:
        """Hold the engine for one turn; urgent callers go first. A bulk caller's cancellation
        makes its turn preemptible by urgent callers."""
        with self._cond:
            if urgent:
                self._urgent_waiting += 1
                if self._running is not None:
                    # Under the gate's lock: the turn cannot end, and its runtime request
                    # cannot start another run, until the cancel has been delivered.
                    self._running.cancel()
                    self._running = None
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
            if not urgent and cancellation is not None:
                if self._urgent_waiting > 0:  # a query is already waiting: don't start
                    cancellation.cancel()
                else:
                    self._running = cancellation
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._running = None
                self._cond.notify_all()
