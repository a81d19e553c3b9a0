"""A worker whose engine fails on everything leaves, instead of failing the fleet's batches.

When a delivery fails and even a one-word probe cannot be embedded, the engine is at fault (a
lost CUDA context, a corrupted runtime), not the batch: the delivery's attempt is given back and
the process exits, so its lock dies with its session and the reconciler sends the batch to a
healthy worker. Counting the attempt would instead fail every batch this worker touches once
`max_task_attempts` deliveries had gone to it. A restarted worker that still cannot embed stops at
its own warm-up, before it consumes anything.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from workers.engine import Embedder

log = logging.getLogger(__name__)

EXIT_CODE = 71  # distinct from the watchdog's 70, so the supervisor's log says which
PROBE_TEXT = "warm-up 预热"


def engine_works(embedder: Embedder) -> bool:
    """Whether the engine can still embed the probe text."""
    try:
        embedder.embed([PROBE_TEXT], observed=False)
    except Exception:
        log.exception("the engine cannot embed even the probe text")
        return False
    return True


def leave() -> NoReturn:
    """End the process at once (Celery's shutdown would ack and carry on)."""
    log.critical(
        "engine broken: this worker exits (code %d) so a healthy one takes its work", EXIT_CODE
    )
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(EXIT_CODE)
