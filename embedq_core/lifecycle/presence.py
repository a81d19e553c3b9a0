"""Each worker's presence: the model it serves and since when its consumer has held no task.

A consumer that holds no task is blocked on its model's queues, so any message there reaches it
at once. A batch unclaimed since its last send, while a worker of its model sat idle for more
than the grace after that send, therefore has no message left in Redis (a worker that died
before recording its claim took it): the reconciler sends it again
(embedq_core/lifecycle/delivery.py). The interval a row reports, from `idle_since` to
`beat_at`, is what the worker saw itself, so it stays evidence after the worker is gone (a
row holds the latest report only).

Rows are written by each worker's reconciler thread every reconcile interval, dated by
Postgres's clock (a worker's name, host:pid, can come back with a restarted container: the new
process overwrites the row); rows not renewed for a day are deleted.
"""

from __future__ import annotations

from typing import Any

import psycopg

STALE_AFTER_S = 86_400


def record_presence(
    conn: psycopg.Connection[Any], worker: str, manifest_id: str, idle_for_s: float | None
) -> None:
    """The worker serves manifest_id; its consumer has held no task for idle_for_s seconds
    (None: it holds one, or is not consuming)."""
    conn.execute(
        """
        INSERT INTO worker_presence AS w (worker, manifest_id, beat_at, idle_since)
        VALUES (%(worker)s, %(manifest)s, now(),
                now() - make_interval(secs => %(idle_for_s)s::float8))
        ON CONFLICT (worker) DO UPDATE
        SET manifest_id = EXCLUDED.manifest_id, beat_at = EXCLUDED.beat_at,
            idle_since = EXCLUDED.idle_since
        """,
        {"worker": worker, "manifest": manifest_id, "idle_for_s": idle_for_s},
    )
    conn.execute(
        "DELETE FROM worker_presence WHERE beat_at < now() - make_interval(secs => %s)",
        (STALE_AFTER_S,),
    )
