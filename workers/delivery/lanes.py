"""Embedding and writing batches behind the consumer thread, so the engine never waits on I/O.

The engine is the expensive part of a batch; the claim, the write and the bookkeeping are
database round trips (and Celery's acknowledge and fetch a Redis one) that leave it idle when
they run in line. Here a batch is claimed, locked and later written on one lane (a database
session) of its own:
- write behind: the consumer thread claims and embeds batch k+1 on one lane while the writer
  thread writes batch k on the other (two lanes);
- claim ahead (write behind, and the engine on a thread of its own): the consumer thread claims
  batch k+2 while the engine thread embeds k+1 and the writer writes k (three lanes).
The batch's advisory lock is taken on its lane's session at the claim and released after the
write commits, so no other worker can take the batch in between.

Celery acknowledges the message when the task returns, before the write commits. That is safe
because recovery is driven from Postgres: a worker that dies with a batch still to embed or
write leaves it claimed after its last send, still pending and unlocked, and the reconciler
re-sends it (as for a worker killed mid-batch). Stopping drains the pending work first.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from embedq_core.settings import Settings
from workers.delivery.db import DbSession

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BatchWrites:
    """The lanes, the writer thread and (claiming ahead) the engine thread; with
    settings.write_behind off, one lane and everything in line."""

    def __init__(self, settings: Settings, worker_name: str) -> None:
        self.background = settings.write_behind
        self.claim_ahead = settings.write_behind and settings.claim_ahead
        lanes = 3 if self.claim_ahead else 2 if self.background else 1
        self._free: queue.Queue[DbSession] = queue.Queue()
        self._lanes = [
            DbSession(settings, f"embedq-worker {worker_name} lane {n}") for n in range(lanes)
        ]
        for lane in self._lanes:
            self._free.put(lane)
        # Threads start on first use; made here, so no two threads race to make one.
        self._executor = (
            ThreadPoolExecutor(1, thread_name_prefix="embedq-write") if self.background else None
        )
        self._engine_executor = (
            ThreadPoolExecutor(1, thread_name_prefix="embedq-engine") if self.claim_ahead else None
        )

    def lane(self) -> DbSession:
        """A lane with no batch on it (waits for the oldest batch's write to end). Hand it back
        with submit(), submit_embed() or release()."""
        return self._free.get()

    def free_lane(self) -> DbSession | None:
        """A lane with no batch on it, or None when every lane holds one still to write."""
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
        assert self._executor is not None
        return self._executor.submit(self._run, lane, write)

    def submit_embed(
        self, lane: DbSession, embed: Callable[[], R], write: Callable[[R], T]
    ) -> None:
        """Claiming ahead: run embed on the engine thread, then write(its result) on the writer
        thread, both behind the caller. embed must end the batch on lane itself when it fails
        (record why); the lane is free again after the write, or after embed fails."""
        assert self._engine_executor is not None, "claim_ahead is off"
        self._engine_executor.submit(self._embed_then_write, lane, embed, write)

    def _embed_then_write(
        self, lane: DbSession, embed: Callable[[], R], write: Callable[[R], T]
    ) -> None:
        try:
            result = embed()
        except BaseException:
            log.exception("embedding a batch behind the consumer failed")
            self._free.put(lane)
            raise
        assert self._executor is not None
        self._executor.submit(self._run, lane, lambda: write(result))

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

    def wait_for_writes(self) -> None:
        """Wait until the writes handed to the writer thread so far have ended (committed or
        failed); from the consumer or engine thread, never from the writer."""
        if self._executor is not None:
            self._executor.submit(lambda: None).result()

    def drain(self) -> None:
        """Wait until every batch handed over has been written (or has failed)."""
        held = [self._free.get() for _ in self._lanes]
        for lane in held:
            self._free.put(lane)

    def stop(self) -> None:
        """Finish pending work, stop the engine and writer threads and close the lanes'
        connections."""
        if self._engine_executor is not None:  # first: its batches hand writes to the writer
            self._engine_executor.shutdown(wait=True)
            self._engine_executor = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        for lane in self._lanes:
            lane.close()
