"""The engine gate: urgent callers go before waiting bulk callers, one holder at a time."""

from __future__ import annotations

import itertools
import threading

from workers.engine.cancellation import Cancellation, RunCancelled
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


def test_an_urgent_caller_cancels_the_preemptible_bulk_turn_in_flight() -> None:
    gate = EngineGate()
    bulk_running = threading.Event()
    stopped = threading.Event()
    order: list[str] = []

    def bulk() -> None:
        cancellation = Cancellation()
        try:
            with (
                gate.turn(urgent=False, cancellation=cancellation),
                cancellation.stoppable(stopped.set),
            ):
                bulk_running.set()
                # A runtime stops between two nodes; this one stops when told to.
                if not stopped.wait(5):
                    order.append("bulk ran to its end")
                    return
                raise RuntimeError("the runtime's own message on a cancelled run")
        except RunCancelled:
            order.append("bulk cancelled")

    thread = threading.Thread(target=bulk)
    thread.start()
    assert bulk_running.wait(5)
    with gate.turn(urgent=True):
        order.append("query")
    thread.join(5)
    assert order == ["bulk cancelled", "query"]


def test_a_bulk_turn_without_a_cancellation_is_waited_for() -> None:
    gate = EngineGate()
    holding = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def bulk() -> None:
        with gate.turn(urgent=False):
            holding.set()
            release.wait(5)
            order.append("bulk")

    thread = threading.Thread(target=bulk)
    thread.start()
    assert holding.wait(5)

    def query() -> None:
        with gate.turn(urgent=True):
            order.append("query")

    waiter = threading.Thread(target=query)
    waiter.start()
    while gate._urgent_waiting == 0:
        threading.Event().wait(0.001)
    release.set()
    for each in (thread, waiter):
        each.join(5)
    assert order == ["bulk", "query"]


def test_a_bulk_turn_taken_while_a_query_waits_is_cancelled_before_it_starts() -> None:
    gate = EngineGate()
    holding = threading.Event()
    release = threading.Event()
    outcome: list[str] = []

    def query_in_flight() -> None:
        with gate.turn(urgent=True):
            holding.set()
            release.wait(5)

    first = threading.Thread(target=query_in_flight)
    first.start()
    assert holding.wait(5)

    def bulk() -> None:
        cancellation = Cancellation()
        try:
            with (
                gate.turn(urgent=False, cancellation=cancellation),
                cancellation.stoppable(lambda: None),
            ):
                outcome.append("bulk ran")
        except RunCancelled:
            outcome.append("bulk cancelled before it ran")

    def second_query() -> None:
        with gate.turn(urgent=True):
            outcome.append("second query")

    bulk_thread = threading.Thread(target=bulk)
    bulk_thread.start()
    while gate._bulk_waiting == 0:
        threading.Event().wait(0.001)
    query_thread = threading.Thread(target=second_query)
    query_thread.start()
    while gate._urgent_waiting == 0:
        threading.Event().wait(0.001)
    release.set()  # bulk gets the next turn (turns alternate), but a query is waiting
    for each in (first, bulk_thread, query_thread):
        each.join(5)
    assert outcome == ["bulk cancelled before it ran", "second query"]
