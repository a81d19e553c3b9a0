"""Finds pending batches whose messages Redis no longer holds and sends them again.

Postgres is the source of truth; Redis can lose messages (restart without persistence, a
flushed database, eviction, a worker killed while holding one). A batch is re-sent when its
job is unfinished, the batch has pending items, no live worker holds its lock, and either the
broker was wiped (the epoch key is gone) or its model's queue is empty and the job was last
enqueued longer than the grace period ago. Duplicates are harmless: processing is idempotent.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

import psycopg

from embedq_core.db import libpq_url
from embedq_core.queueing import (
    EMBED_BATCH_TASK,
    REEMBED_STEP_TASK,
    embed_queue,
    make_celery,
    make_redis,
    queue_depth,
    reembed_queue,
)
from embedq_core.settings import Settings
from migrations.reembed.backfill import STEP_LOCK_SQL, STEP_UNLOCK_SQL, new_step_token
from workers.job_state import LOCK_BATCH_SQL, UNLOCK_BATCH_SQL

log = logging.getLogger(__name__)

RECONCILER_LOCK_ID = 0x656D6271  # one reconciler at a time across the fleet
BROKER_EPOCH_KEY = "embedq:broker-epoch"

PENDING_BATCHES_SQL = """
SELECT j.id::text, j.manifest_id, i.batch_no,
       coalesce(j.enqueued_at, j.created_at) < now() - make_interval(secs => %s) AS stale
FROM jobs j JOIN job_items i ON i.job_id = j.id AND i.status = 'pending'
WHERE j.finished_at IS NULL
GROUP BY j.id, j.manifest_id, i.batch_no, j.enqueued_at, j.created_at
ORDER BY j.created_at, i.batch_no
"""


class Reconciler:
    """One pass re-sends lost batches; run() repeats it until stopped."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._celery = make_celery(settings)
        self._redis = make_redis(settings)
        self._conn: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(
                libpq_url(self._settings.require_database_url()), autocommit=True
            )
        return self._conn

    def run_once(self) -> int:
        """One reconciliation pass; returns how many batches were sent again."""
        conn = self._connection()
        with conn.transaction():
            locked = conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s)", (RECONCILER_LOCK_ID,)
            ).fetchone()
            if not (locked and locked[0]):
                return 0
            # SET NX succeeds only if the key is missing: a new, restarted or flushed broker.
            broker_wiped = bool(self._redis.set(BROKER_EPOCH_KEY, "1", nx=True))
            rows = conn.execute(PENDING_BATCHES_SQL, (self._settings.requeue_grace_s,)).fetchall()
            depth: dict[str, int] = {}
            resend: dict[tuple[str, str], list[int]] = defaultdict(list)
            for job_id, manifest_id, batch_no, stale in rows:
                queue = embed_queue(manifest_id)
                if queue not in depth:
                    depth[queue] = queue_depth(self._redis, queue)
                lost = broker_wiped or (depth[queue] == 0 and stale)
                if lost and self._batch_is_free(conn, job_id, batch_no):
                    resend[(job_id, manifest_id)].append(batch_no)
            for (job_id, manifest_id), batch_nos in resend.items():
                for batch_no in batch_nos:
                    self._celery.send_task(
                        EMBED_BATCH_TASK, args=[job_id, batch_no], queue=embed_queue(manifest_id)
                    )
                conn.execute("UPDATE jobs SET enqueued_at = now() WHERE id = %s", (job_id,))
            sent_steps = self._resend_migration_steps(conn, broker_wiped)
        sent = sum(len(b) for b in resend.values()) + sent_steps
        if sent:
            log.warning(
                "reconciler re-sent %d messages (batches of %d jobs, migration steps)%s",
                sent,
                len(resend),
                " (broker was wiped)" if broker_wiped else "",
            )
        return sent

    def _resend_migration_steps(self, conn: psycopg.Connection[Any], broker_wiped: bool) -> int:
        """A running migration whose step chain stopped (its message lost, its worker killed)
        gets a new step with a new token, which retires any straggler of the old chain."""
        grace_s = self._settings.requeue_grace_s + self._settings.reembed_follow_interval_s
        rows = conn.execute(
            "SELECT name, manifest_id FROM reembed_migrations WHERE status = 'running'"
            " AND updated_at < now() - make_interval(secs => %s)",
            (grace_s,),
        ).fetchall()
        sent = 0
        for name, manifest_id in rows:
            queue = reembed_queue(manifest_id)
            if not (broker_wiped or queue_depth(self._redis, queue) == 0):
                continue
            locked = conn.execute(STEP_LOCK_SQL, (name,)).fetchone()
            if not (locked and locked[0]):
                continue  # a step is running (e.g. building the index)
            conn.execute(STEP_UNLOCK_SQL, (name,))
            token = new_step_token(conn, name)
            self._celery.send_task(REEMBED_STEP_TASK, args=[name, token], queue=queue)
            sent += 1
        return sent

    @staticmethod
    def _batch_is_free(conn: psycopg.Connection[Any], job_id: str, batch_no: int) -> bool:
        row = conn.execute(LOCK_BATCH_SQL, (job_id, batch_no)).fetchone()
        if row and row[0]:
            conn.execute(UNLOCK_BATCH_SQL, (job_id, batch_no))
            return True
        return False

    def run(self) -> None:
        """Reconcile every reconcile_interval_s until stop(); errors are logged and retried."""
        while not self._stop.wait(self._settings.reconcile_interval_s):
            try:
                self.run_once()
            except Exception as exc:  # outage of Postgres or Redis: try again next tick
                log.warning("reconciler pass failed: %s: %s", type(exc).__name__, exc)
                if self._conn is not None and not self._conn.closed:
                    self._conn.close()

    def start(self) -> None:
        """Run in a daemon thread beside the worker."""
        self._thread = threading.Thread(target=self.run, name="embedq-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._conn is not None:
            self._conn.close()
        self._redis.close()
