"""Cancelling an engine run in flight, so a live query need not wait for a bulk batch.

Both runtimes stop a run between two graph nodes when asked from another thread (OpenVINO's
InferRequest.cancel, ONNX Runtime's RunOptions.terminate): the run raises, and the caller that
asked knows from its Cancellation that the failure was its own doing, not the model's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class RunCancelled(Exception):
    """The engine run was cancelled on purpose (to let a live query run first)."""


class Cancellation:
    """One engine run's off switch: the session registers how to stop it while it runs, and
    anyone may call cancel() once; a run started after cancel() never starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._stop: Callable[[], None] | None = None

    @property
    def cancelled(self) -> bool:
        """Whether cancel() was called."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop the run in flight, if any; the stop is called under the lock, so the session
        cannot unregister it and reuse its request for another run meanwhile."""
        with self._lock:
            self._cancelled = True
            if self._stop is not None:
                self._stop()

    @contextmanager
    def stoppable(self, stop: Callable[[], None]) -> Iterator[None]:
        """Run the block with `stop` as its off switch; a failure after cancel() becomes
        RunCancelled, whatever the runtime raised."""
        with self._lock:
            if self._cancelled:
                raise RunCancelled
            self._stop = stop
        try:
            yield
        except Exception as exc:
            if self._cancelled:
                raise RunCancelled from exc
            raise
        finally:
            with self._lock:
                self._stop = None
