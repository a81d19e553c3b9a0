"""Writing a batch's vectors on a second thread while the consumer thread embeds the next batch.

The engine is the expensive part of a batch; the claim, the write and the bookkeeping are
database round trips that leave it idle when they run in line. Here a batch is claimed, locked
and later written on one of two lanes (a database session each): the consumer thread claims and
embeds batch k+1 on one lane while this module's thread writes batch k on the other. The batch's
advisory lock is taken on its lane's session at the claim and released after the write commits,
so no other worker can take the batch in between.

Celery acknowledges the message when the task returns, before the write commits. That is safe
because recovery is driven from Postgres: a worker that dies with a write pending leaves a batch
that is claimed after its last send, still pending and unlocked, and the reconciler re-sends it
(as for a worker killed mid-batch). Stopping drains the pending writes first.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from embedq_core.settings import Settings
from workers.db_session import DbSession

log = logging.getLogger(__name__)

T = TypeVar("T")

LANES = 2


class BatchWrites:
    """Two lanes and one writer thread; with settings.write_behind off, writes run in line."""

    def __init__(self, settings: Settings, worker_name: str) -> None:
        self.background = settings.write_behind
        lanes = LANES if self.background else 1
        self._free: queue.Queue[DbSession] = queue.Queue()
        self._lanes = [
            DbSession(settings, f"embedq-worker {worker_name} lane {n}") for n in range(lanes)
        ]
        for lane in self._lanes:
            self._free.put(lane)
        self._executor: ThreadPoolExecutor | None = None

    def lane(self) -> DbSession:
        """A lane with no write pending (waits for the older batch's write to commit). Hand it
        back with submit() or release()."""
        return self._free.get()

    def free_lane(self) -> DbSession | None:
        """A lane with no write pending, or None when every lane is still writing."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            return None

    def release(self, lane: DbSession) -> None:
        """Give back a lane whose batch ended without a write."""
        self._free.put(lane)

    def submit(self, lane: DbSession, write: Callable[[], T]) -> Future[T]:
        """Run write (which must end the batch on lane: commit or record why not) behind the
        caller, or in line when write-behind is off; the lane is free again afterwards."""
        if not self.background:
            done: Future[T] = Future()
            try:
                done.set_result(write())
            except BaseException as exc:
                done.set_exception(exc)
                raise
            finally:
                self._free.put(lane)
            return done
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="embedq-write")
        return self._executor.submit(self._run, lane, write)

    def _run(self, lane: DbSession, write: Callable[[], T]) -> T:
        try:
            return write()
        except Exception:
            # write records the batch's fate itself; what reaches here is logged, and the batch
            # is left claimed and pending for the reconciler.
            log.exception("writing a batch behind the engine failed")
            raise
        finally:
            self._free.put(lane)

    def drain(self) -> None:
        """Wait until every submitted write has finished."""
        held = [self._free.get() for _ in self._lanes]
        for lane in held:
            self._free.put(lane)

    def stop(self) -> None:
        """Finish pending writes, stop the writer thread and close the lanes' connections."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        for lane in self._lanes:
            lane.close()
