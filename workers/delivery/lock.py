"""The advisory lock a worker holds on a batch while it works on it, across reconnects."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from embedq_core.lifecycle.claims import try_lock_batch, unlock_batch
from embedq_core.settings import Settings
from workers.delivery.db import DbSession, with_db_retry

T = TypeVar("T")


class BatchBusy(Exception):
    """Another live worker holds the batch."""


class BatchLock:
    """Runs units of work on a session (one of the worker's write lanes) that holds the batch's
    session lock.

    The lock lives and dies with the Postgres session: a killed worker frees it at once. A
    worker that lost its connection lost the lock too, so after reconnecting it takes the lock
    again before going on, or stops with BatchBusy if another worker took the batch meanwhile.
    """

    def __init__(self, settings: Settings, session: DbSession, job_id: str, batch_no: int) -> None:
        self._settings = settings
        self._session = session
        self._job_id = job_id
        self._batch_no = batch_no
        self._holder: psycopg.Connection[Any] | None = None

    def run(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """fn(conn) under the lock; transient errors (connection loss, deadlock, serialization
        failure) run it again, for up to db_retry_timeout_s. fn must be one transaction."""
        return with_db_retry(self._settings, lambda: fn(self._locked_connection()))

    def _locked_connection(self) -> psycopg.Connection[Any]:
        conn = self._session.connection()
        if conn is not self._holder:  # first use, or a new session after a reconnect
            self._holder = None
            if not try_lock_batch(conn, self._job_id, self._batch_no):
                raise BatchBusy
            self._holder = conn
        return conn

    def release(self) -> None:
        """Release the lock if this worker still holds it."""
        conn, self._holder = self._holder, None
        if conn is not None and not conn.closed and not conn.broken:
            # A connection that fails now takes the lock with it.
            with contextlib.suppress(psycopg.OperationalError):
                unlock_batch(conn, self._job_id, self._batch_no)
