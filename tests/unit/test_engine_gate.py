"""The engine gate: urgent callers go before waiting bulk callers, one holder at a time."""

from __future__ import annotations

import itertools
import threading

from workers.engine.gate import EngineGate


def test_urgent_caller_goes_before_a_waiting_bulk_caller() -> None:
    gate = EngineGate()
    order: list[str] = []
    holding = threading.Event()
    release = threading.Event()
    waiting = threading.Barrier(3)

    def first() -> None:
        with gate.turn(urgent=False):
            holding.set()
            release.wait(5)
            order.append("first")

    def caller(name: str, urgent: bool) -> None:
        waiting.wait(5)
        with gate.turn(urgent):
            order.append(name)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert holding.wait(5)
    threads += [
        threading.Thread(target=caller, args=("bulk", False)),
        threading.Thread(target=caller, args=("query", True)),
    ]
    for thread in threads[1:]:
        thread.start()
    waiting.wait(5)
    # Both are now blocked on the gate (or about to be); wait until the urgent one counts.
    while gate._urgent_waiting == 0:
        threading.Event().wait(0.001)
    release.set()
    for thread in threads:
        thread.join(5)
    assert order == ["first", "query", "bulk"]


def test_one_holder_at_a_time() -> None:
    gate = EngineGate()
    inside = 0
    most = 0
    lock = threading.Lock()

    def work(urgent: bool) -> None:
        nonlocal inside, most
        for _ in range(200):
            with gate.turn(urgent):
                with lock:
                    inside += 1
                    most = max(most, inside)
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=work, args=(i % 2 == 0,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most == 1


def test_a_stream_of_urgent_callers_cannot_starve_bulk_work() -> None:
    gate = EngineGate()
    order: list[str] = []
    stop = threading.Event()

    def urgent_stream() -> None:
        while not stop.is_set():
            with gate.turn(urgent=True):
                order.append("query")
                threading.Event().wait(0.001)

    streams = [threading.Thread(target=urgent_stream) for _ in range(3)]
    for thread in streams:
        thread.start()
    for _ in range(20):
        with gate.turn(urgent=False):
            order.append("bulk")
    stop.set()
    for thread in streams:
        thread.join(5)
    bulk_turns = [i for i, who in enumerate(order) if who == "bulk"]
    assert len(bulk_turns) == 20
    # While queries keep coming, bulk still gets about every other turn (a query may slip in
    # twice while the bulk thread is between two turns, not counted as waiting).
    gaps = [b - a - 1 for a, b in itertools.pairwise(bulk_turns)]
    assert sum(gaps) / len(gaps) <= 1.5 and max(gaps) <= 4, gaps
