"""Ends the worker process when a task overruns its time limit.

Celery enforces task time limits from outside the task, in its prefork and gevent pools; the
solo pool runs the task on the consumer's own thread and enforces none (its pool info reports
no timeouts). A hung batch would keep its advisory lock, and the worker, forever. This watchdog
ends the process instead: the batch's lock dies with the Postgres connection, the reconciler
re-sends the batch, and the process supervisor (compose `restart`, Kubernetes) starts a fresh
worker. The claim counted an attempt, so a batch that hangs every time ends `failed` after
`max_task_attempts` deliveries.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

# EX_SOFTWARE: the supervisor's logs tell a watchdog exit from a crash or a signal.
EXIT_CODE = 70
# faulthandler's own timer needs no Python thread to run, so it also ends a hang that holds
# the GIL; it fires this much later than the timer that logs why.
BACKSTOP_S = 10.0
# The process's stderr, by descriptor: Celery may have replaced sys.stderr with a logger proxy.
STDERR_FD = 2


@contextmanager
def time_limit(limit_s: float, what: str, backstop: bool = True) -> Iterator[None]:
    """Run the body; if it is still running after limit_s, log `what`, dump every thread's
    stack (where it hung) and exit the process with EXIT_CODE. faulthandler keeps one timer per
    process: only the consumer thread's limit has the backstop (backstop=False elsewhere)."""
    timer = threading.Timer(limit_s, _expire, args=(limit_s, what))
    timer.daemon = True
    if backstop:
        faulthandler.dump_traceback_later(limit_s + BACKSTOP_S, exit=True, file=STDERR_FD)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if backstop:
            faulthandler.cancel_dump_traceback_later()


def _expire(limit_s: float, what: str) -> None:
    log.critical(
        "%s still running after task_time_limit_s=%s: ending this worker so its batch lock is "
        "released and the batch is sent again",
        what,
        limit_s,
    )
    faulthandler.dump_traceback(file=STDERR_FD, all_threads=True)
    os._exit(EXIT_CODE)
