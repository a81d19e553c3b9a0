"""The run modes' lanes and threads: claiming ahead, the engine runs a batch on its own thread
while the consumer takes a lane for the next one, and the writer writes it after.

Pure thread logic: the lanes' database sessions connect only when used, and nothing here uses
them (the embed and the write are stand-ins; the real ones run in tests/e2e)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from embedq_core.settings import Settings
from workers.delivery.db import DbSession
from workers.delivery.lanes import ClaimAhead, InLine, RunMode, WriteBehind, run_mode

WAIT_S = 10.0


class StandIn:
    """A delivery whose engine call and write are the test's functions."""

    def __init__(
        self, lane: DbSession, embed: Callable[[], Any], write: Callable[[Any], Any]
    ) -> None:
        self.lane = lane
        self._embed = embed
        self._write = write
        self.handed_over = False

    def hand_over(self) -> None:
        self.handed_over = True

    def embed(self) -> Any:
        return self._embed()

    def embed_behind(self) -> Any:
        return self._embed()

    def store(self, embedded: Any) -> Any:
        return self._write(embedded)


def _lanes(writes: RunMode) -> int:
    taken = []
    while (lane := writes.free_lane()) is not None:
        taken.append(lane)
    for lane in taken:
        writes.release(lane)
    return len(taken)


@pytest.mark.parametrize(
    ("write_behind", "claim_ahead", "mode", "lanes"),
    [
        (True, True, ClaimAhead, 3),
        (True, False, WriteBehind, 2),
        (False, True, InLine, 1),
        (False, False, InLine, 1),
    ],
)
def test_the_mode_and_its_lanes_follow_the_settings(
    write_behind: bool, claim_ahead: bool, mode: type[RunMode], lanes: int
) -> None:
    writes = run_mode(Settings(write_behind=write_behind, claim_ahead=claim_ahead), "test")
    assert type(writes) is mode
    assert writes.claim_ahead == (write_behind and claim_ahead)
    assert _lanes(writes) == lanes
    writes.stop()


def test_in_line_writes_on_the_caller_and_frees_the_lane() -> None:
    writes = run_mode(Settings(write_behind=False), "test")
    threads: list[str] = []
    delivery = StandIn(writes.lane(), lambda: "vectors", lambda v: threads.append(v) or "stored")
    assert writes.deliver(delivery) == "stored"
    assert delivery.handed_over and threads == ["vectors"]
    assert _lanes(writes) == 1
    writes.stop()


def test_the_next_lane_is_free_while_the_engine_runs_and_the_write_gets_its_result() -> None:
    writes = run_mode(Settings(write_behind=True, claim_ahead=True), "test")
    engine_running = threading.Event()
    engine_may_finish = threading.Event()
    written: list[tuple[str, str]] = []
    threads: dict[str, str] = {}

    def embed() -> str:
        threads["embed"] = threading.current_thread().name
        engine_running.set()
        assert engine_may_finish.wait(WAIT_S)
        return "vectors of batch 0"

    def write(result: str) -> str:
        threads["write"] = threading.current_thread().name
        written.append((result, threading.current_thread().name))
        return "stored"

    delivery = StandIn(writes.lane(), embed, write)
    assert writes.deliver(delivery) is None  # returns at once: the consumer goes on
    assert delivery.handed_over
    assert engine_running.wait(WAIT_S)
    # The consumer claims the next batch on a lane of its own while the engine runs this one.
    assert _lanes(writes) == 2
    assert written == []
    engine_may_finish.set()
    writes.drain()
    assert [result for result, _ in written] == ["vectors of batch 0"]
    assert threads["embed"].startswith("embedq-engine")
    assert threads["write"].startswith("embedq-write")
    assert threading.current_thread().name not in threads.values()
    assert _lanes(writes) == 3
    writes.stop()


def test_a_failed_embed_frees_its_lane_and_writes_nothing() -> None:
    writes = run_mode(Settings(write_behind=True, claim_ahead=True), "test")
    written: list[str] = []

    def embed() -> str:
        raise RuntimeError("engine failed")

    writes.deliver(StandIn(writes.lane(), embed, written.append))
    writes.drain()  # would wait forever if the lane were lost
    assert written == []
    assert _lanes(writes) == 3
    writes.stop()


def test_stop_finishes_the_batches_handed_over_first() -> None:
    writes = run_mode(Settings(write_behind=True, claim_ahead=True), "test")
    written: list[int] = []
    for batch_no in range(3):
        writes.deliver(StandIn(writes.lane(), lambda n=batch_no: n, written.append))
    writes.stop()
    assert written == [0, 1, 2]  # in order: one engine thread, one writer thread
