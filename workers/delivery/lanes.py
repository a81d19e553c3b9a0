"""The run modes: how a delivery's engine call and write run beside the consumer thread.

The engine is the expensive part of a batch; the claim, the write and the bookkeeping are
database round trips (and Celery's acknowledge and fetch a Redis one) that leave it idle when
they run in line. A batch is claimed, locked and later written on one lane (a database session)
of its own, and each mode is one small strategy over those lanes:
- in line: claim, embed and write one after the other on the consumer thread (one lane);
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
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from embedq_core.settings import Settings
from workers.delivery.db import DbSession

log = logging.getLogger(__name__)

T = TypeVar("T")


class Delivery(Protocol):
    """A claimed and planned delivery, as a run mode moves it through the engine and the
    writer."""

    lane: DbSession

    def hand_over(self) -> None:
        """From here the mode ends the batch: its locks, lane and timer are no longer the
        consumer's to release."""

    def embed(self) -> Any:
        """The engine call on the calling thread (a failure is recorded, then raised)."""

    def embed_behind(self) -> Any:
        """The same on the engine thread, which releases the batches' locks on failure."""

    def store(self, embedded: Any) -> Any:
        """Write what embed returned and end the batches (commit, or record why not)."""


class RunMode:
    """The lanes every mode claims on; a mode adds how it runs a delivery (deliver)."""

    lane_count = 1
    write_behind = False
    claim_ahead = False

    def __init__(self, settings: Settings, worker_name: str) -> None:
        self._free: queue.Queue[DbSession] = queue.Queue()
        self._lanes = [
            DbSession(settings, f"embedq-worker {worker_name} lane {n}")
            for n in range(self.lane_count)
        ]
        for lane in self._lanes:
            self._free.put(lane)

    def deliver(self, delivery: Delivery) -> Any | None:
        """Embed and store the delivery; its outcome when stored on this thread, None when
        the mode stores it behind the caller."""
        raise NotImplementedError

    def lane(self) -> DbSession:
        """A lane with no batch on it (waits for the oldest batch's write to end). Hand it back
        through deliver() or release()."""
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

    def wait_for_writes(self) -> None:
        """Wait until the writes handed over so far have ended (committed or failed); from the
        consumer or engine thread, never from the writer."""

    def drain(self) -> None:
        """Wait until every batch handed over has been written (or has failed)."""
        held = [self._free.get() for _ in self._lanes]
        for lane in held:
            self._free.put(lane)

    def stop(self) -> None:
        """Finish pending work, stop the mode's threads and close the lanes' connections."""
        for lane in self._lanes:
            lane.close()


class InLine(RunMode):
    """Claim, embed and write one after the other on the consumer thread."""

    def deliver(self, delivery: Delivery) -> Any:
        embedded = delivery.embed()
        delivery.hand_over()
        try:
            return delivery.store(embedded)
        finally:
            self.release(delivery.lane)


class WriteBehind(RunMode):
    """Embed on the consumer thread; write on the writer thread while the consumer claims and
    embeds the next batch."""

    lane_count = 2
    write_behind = True

    def __init__(self, settings: Settings, worker_name: str) -> None:
        super().__init__(settings, worker_name)
        # Made here, so no two threads race to make it; its thread starts on first use.
        self._writer: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="embedq-write"
        )

    def deliver(self, delivery: Delivery) -> Any | None:
        embedded = delivery.embed()
        delivery.hand_over()
        written = self._write_behind(delivery.lane, lambda: delivery.store(embedded))
        return written.result() if written.done() else None

    def _write_behind(self, lane: DbSession, write: Callable[[], T]) -> Any:
        assert self._writer is not None, "stopped"
        return self._writer.submit(self._write, lane, write)

    def _write(self, lane: DbSession, write: Callable[[], T]) -> T:
        try:
            return write()
        except Exception:
            # write records the batch's fate itself; what reaches here is logged, and the batch
            # is left claimed and pending for the reconciler.
            log.exception("writing a batch behind the engine failed")
            raise
        finally:
            self.release(lane)

    def wait_for_writes(self) -> None:
        if self._writer is not None:
            self._writer.submit(lambda: None).result()

    def stop(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        super().stop()


class ClaimAhead(WriteBehind):
    """Embed on the engine thread and write on the writer thread, while the consumer claims
    the next batch (and acknowledges its message)."""

    lane_count = 3
    claim_ahead = True

    def __init__(self, settings: Settings, worker_name: str) -> None:
        super().__init__(settings, worker_name)
        self._engine: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="embedq-engine"
        )

    def deliver(self, delivery: Delivery) -> None:
        delivery.hand_over()
        assert self._engine is not None, "stopped"
        self._engine.submit(self._embed_then_write, delivery)
        return None

    def _embed_then_write(self, delivery: Delivery) -> None:
        try:
            embedded = delivery.embed_behind()
        except BaseException:
            log.exception("embedding a batch behind the consumer failed")
            self.release(delivery.lane)
            raise
        self._write_behind(delivery.lane, lambda: delivery.store(embedded))

    def stop(self) -> None:
        if self._engine is not None:  # first: its batches hand writes to the writer
            self._engine.shutdown(wait=True)
            self._engine = None
        super().stop()


def run_mode(settings: Settings, worker_name: str) -> RunMode:
    """The mode the settings ask for: claim ahead needs write behind."""
    if not settings.write_behind:
        return InLine(settings, worker_name)
    if settings.claim_ahead:
        return ClaimAhead(settings, worker_name)
    return WriteBehind(settings, worker_name)
