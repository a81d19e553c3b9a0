"""A thread in each worker process that builds HNSW indexes: re-embedding migrations' and,
after their bulk load, collections' (embedq_core/collection_index.py).

The build runs in Postgres; this thread only waits for it, so the worker's Celery consumer
keeps serving live batches and migration steps on the same model meanwhile. Every worker runs
one, and a per-migration advisory lock (migrations/reembed/index_build.py) makes exactly one
of them build each index; if that worker dies, another picks the build up.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from embedq_core.collection_index import (
    build_hnsw_index,
    build_sparse_index,
    collections_to_index,
    due_now,
    sparse_collections_to_index,
)
from embedq_core.db import ReconnectingConnection
from embedq_core.settings import Settings
from migrations.reembed.index_build import IndexOptions, build_index, migrations_to_index

log = logging.getLogger(__name__)

# How long stop() waits for a pass; a build in progress is not waited for (see stop).
STOP_JOIN_S = 2.0


class IndexMaintenance:
    """Every interval, builds the index of migrations in their `index` phase and of
    collections whose bulk load is over (collection_index.due_now)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._options = IndexOptions(
            maintenance_work_mem=settings.reembed_maintenance_work_mem,
            max_attempts=settings.reembed_max_step_attempts,
        )
        self._db = ReconnectingConnection(
            settings.require_database_url(), "embedq index maintenance"
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Tables seen with a few items pending and not yet built by this worker
        # (collection_index.due_now); in-process only, a restarted worker waits one more pass.
        self._dense_seen_pending: set[str] = set()
        self._sparse_seen_pending: set[str] = set()

    def run_once(self) -> int:
        """Build every index that is due and free; returns how many were built."""
        conn = self._db.get()
        built = 0
        for name in migrations_to_index(conn):
            if self._stop.is_set():
                break
            if build_index(conn, name, self._options) == "built":
                built += 1
        pending_below = self._settings.index_pending_items_below
        dense, self._dense_seen_pending = due_now(
            collections_to_index(conn, pending_below), self._dense_seen_pending
        )
        sparse, self._sparse_seen_pending = due_now(
            sparse_collections_to_index(conn, pending_below), self._sparse_seen_pending
        )
        due = [(t, build_hnsw_index, self._dense_seen_pending) for t in dense]
        due += [(t, build_sparse_index, self._sparse_seen_pending) for t in sparse]
        for vector_table, build, seen_pending in due:
            if self._stop.is_set():
                break
            try:
                if build(conn, vector_table, self._options.maintenance_work_mem):
                    built += 1
                    seen_pending.discard(vector_table)
            except psycopg.OperationalError:
                raise  # Postgres went away: the whole pass is retried next tick
            except psycopg.Error as exc:
                # One table's failure (a full disk, say) must not hold up the others; it is
                # tried again on a later pass.
                log.warning("HNSW build of %s failed: %s", vector_table, exc)
        return built

    def run(self) -> None:
        """Repeat run_once every poll interval until stop(); errors are logged and retried."""
        while not self._stop.wait(self._settings.reembed_index_poll_interval_s):
            try:
                self.run_once()
            except Exception as exc:  # outage of Postgres: try again next tick
                log.warning("index maintenance pass failed: %s: %s", type(exc).__name__, exc)
                self._db.close()

    def start(self) -> None:
        """Run in a daemon thread beside the worker."""
        self._thread = threading.Thread(target=self.run, name="embedq-index", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop looking for work. A build in progress is left to Postgres rather than
        cancelled: the server finishes it even after this process exits, and the next
        worker's pass finds the index valid and moves the migration on."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_JOIN_S)
        idle = self._thread is None or not self._thread.is_alive()
        if idle:
            self._db.close()
