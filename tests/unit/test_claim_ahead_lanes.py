"""The worker's lanes and threads behind the consumer: claiming ahead, the engine runs a batch on
its own thread while the consumer takes a lane for the next one, and the writer writes it after.

Pure thread logic: the lanes' database sessions connect only when used, and nothing here uses
them (the claim, embed and write are stand-ins; the real ones run in tests/e2e)."""

from __future__ import annotations

import threading

import pytest

from embedq_core.settings import Settings
from workers.delivery.lanes import BatchWrites

WAIT_S = 10.0


def _lanes(writes: BatchWrites) -> int:
    taken = []
    while (lane := writes.free_lane()) is not None:
        taken.append(lane)
    for lane in taken:
        writes.release(lane)
    return len(taken)


@pytest.mark.parametrize(
    ("write_behind", "claim_ahead", "lanes"),
    [(True, True, 3), (True, False, 2), (False, True, 1), (False, False, 1)],
)
def test_lanes_follow_the_settings(write_behind: bool, claim_ahead: bool, lanes: int) -> None:
    writes = BatchWrites(Settings(write_behind=write_behind, claim_ahead=claim_ahead), "test")
    assert writes.claim_ahead == (write_behind and claim_ahead)
    assert _lanes(writes) == lanes
    writes.stop()


def test_the_next_lane_is_free_while_the_engine_runs_and_the_write_gets_its_result() -> None:
    writes = BatchWrites(Settings(write_behind=True, claim_ahead=True), "test")
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

    lane = writes.lane()
    writes.submit_embed(lane, embed, write)  # returns at once: the consumer goes on
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
    writes = BatchWrites(Settings(write_behind=True, claim_ahead=True), "test")
    written: list[str] = []

    def embed() -> str:
        raise RuntimeError("engine failed")

    writes.submit_embed(writes.lane(), embed, written.append)
    writes.drain()  # would wait forever if the lane were lost
    assert written == []
    assert _lanes(writes) == 3
    writes.stop()


def test_stop_finishes_the_batches_handed_over_first() -> None:
    writes = BatchWrites(Settings(write_behind=True, claim_ahead=True), "test")
    written: list[int] = []
    for batch_no in range(3):
        writes.submit_embed(writes.lane(), lambda n=batch_no: n, written.append)  # type: ignore[misc]
    writes.stop()
    assert written == [0, 1, 2]  # in order: one engine thread, one writer thread
