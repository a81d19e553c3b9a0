"""Finds pending batches whose message is gone and sends them again, from what Postgres knows.

Postgres is the source of truth; Redis can lose messages (restart without persistence, a flushed
database, eviction), and a consumed message can leave its batch pending (a killed or hung
worker, a delivery that failed and that Celery acked). Every batch's sends and claims are
recorded in job_batches (embedq_core/lifecycle/delivery.py); a pending batch that no live worker
holds is re-sent when the broker was wiped, when it was never sent, when its last claim is at or
after its last send, or when a message queued behind its last send was delivered or a worker of
its model sat idle (a worker took its message and died before claiming), once requeue_grace_s
has passed: whatever the queue depth (and, as a backstop, when a send went unclaimed for
visibility_timeout_s). Re-sent batches go at the front of their queue, so recovery takes a few
reconcile intervals, not the time the backlog takes to drain. Duplicates are harmless:
processing is idempotent.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

import psycopg

from embedq_core.db import ReconnectingConnection
from embedq_core.lifecycle.claims import LOCK_BATCH_SQL, UNLOCK_BATCH_SQL
from embedq_core.lifecycle.delivery import adopt_unrecorded_jobs, lost_batches, record_resent
from embedq_core.lifecycle.presence import record_presence
from embedq_core.queueing import (
    EMBED_BATCH_TASK,
    REEMBED_STEP_TASK,
    RESEND_PRIORITY,
    SEND_NO_HEADER,
    embed_queue,
    make_celery,
    make_redis,
    queue_depth,
    reembed_queue,
)
from embedq_core.settings import Settings
from migrations.reembed import attempts
from migrations.reembed.backfill import new_step_token
from workers.background.presence import ConsumerIdle

log = logging.getLogger(__name__)

RECONCILER_LOCK_ID = 0x656D6271  # one reconciler at a time across the fleet
BROKER_EPOCH_KEY = "embedq:broker-epoch"


class Reconciler:
    """One pass re-sends lost batches; run() repeats it until stopped, reporting first, each
    time, whether this worker's consumer (serving manifest_id) holds a task."""

    def __init__(
        self, settings: Settings, worker_name: str, manifest_id: str, consumer: ConsumerIdle
    ) -> None:
        self._settings = settings
        self._worker_name = worker_name
        self._manifest_id = manifest_id
        self._consumer = consumer
        self._celery = make_celery(settings)
        self._redis = make_redis(settings)
        self._db = ReconnectingConnection(settings.require_database_url(), "embedq reconciler")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One reconciliation pass; returns how many batches were sent again."""
        conn = self._db.get()
        with conn.transaction():
            locked = conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s)", (RECONCILER_LOCK_ID,)
            ).fetchone()
            if not (locked and locked[0]):
                return 0
            # The key is missing on a new, restarted or flushed broker. It is set again only
            # once this pass has committed, so a pass that fails still leaves the wipe seen.
            broker_wiped = not self._redis.exists(BROKER_EPOCH_KEY)
            adopt_unrecorded_jobs(conn)
            resend: dict[tuple[str, str], list[int]] = defaultdict(list)
            lost = lost_batches(
                conn,
                grace_s=self._settings.requeue_grace_s,
                unclaimed_s=self._settings.visibility_timeout_s,
                broker_wiped=broker_wiped,
            )
            for batch in lost:
                if self._batch_is_free(conn, batch.job_id, batch.batch_no):
                    resend[(batch.job_id, batch.manifest_id)].append(batch.batch_no)
            for (job_id, manifest_id), batch_nos in resend.items():
                # Recorded in this transaction, whose start precedes the publish: a claim of
                # these messages is always at or after the send it records.
                send_nos = record_resent(conn, job_id, batch_nos)
                for batch_no in batch_nos:
                    self._celery.send_task(
                        EMBED_BATCH_TASK,
                        args=[job_id, batch_no],
                        queue=embed_queue(manifest_id),
                        priority=RESEND_PRIORITY,
                        headers={SEND_NO_HEADER: send_nos[batch_no]},
                    )
            sent_steps = self._resend_migration_steps(conn, broker_wiped)
        if broker_wiped:
            self._redis.set(BROKER_EPOCH_KEY, "1")
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
        gets a new step with a new token, which retires any straggler of the old chain. Not
        while the model's live queue has work: the chain is then yielding to it (its message
        waits out a countdown in a worker, not in the queue), and a new one would only race it."""
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
            if queue_depth(self._redis, embed_queue(manifest_id)) > 0:
                continue  # live work first; the chain resumes (or is re-sent) once it drains
            if not attempts.try_lock(conn, "step_attempts", name):
                continue  # a step is running
            attempts.unlock(conn, "step_attempts", name)
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

    def report_presence(self) -> None:
        """Record this worker's model and how long its consumer has held no task."""
        conn = self._db.get()
        with conn.transaction():
            record_presence(conn, self._worker_name, self._manifest_id, self._consumer.idle_for_s())

    def run(self) -> None:
        """Reconcile every reconcile_interval_s until stop(); errors are logged and retried."""
        while not self._stop.wait(self._settings.reconcile_interval_s):
            try:
                self.report_presence()
                self.run_once()
            except Exception as exc:  # outage of Postgres or Redis: try again next tick
                log.warning("reconciler pass failed: %s: %s", type(exc).__name__, exc)
                self._db.close()

    def start(self) -> None:
        """Run in a daemon thread beside the worker."""
        self._thread = threading.Thread(target=self.run, name="embedq-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._db.close()
        self._redis.close()
