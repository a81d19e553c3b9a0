"""A worker's database session: one reconnecting connection set up for holding batch locks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from pgvector.psycopg import register_vector
from psycopg.conninfo import make_conninfo
from tenacity import (
    RetryCallState,
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from embedq_core.db import libpq_url
from embedq_core.settings import Settings
from workers.telemetry import metrics

log = logging.getLogger(__name__)

# While a query runs, Postgres checks this often that the client is still there. A worker that
# dies (or is ended by its watchdog) mid-query then loses its session, and with it the batch's
# advisory lock, within seconds instead of when the query would have ended (a lock wait: never).
CLIENT_CHECK_INTERVAL = "2s"

# A worker host that vanishes (power, network) sends no FIN: without these the server keeps its
# session, and the batch's advisory lock, for the kernel's default ~2 h. The server probes an
# idle session after 30 s, every 10 s, and drops it after 3 unanswered probes; unacknowledged
# data is given up after 60 s. The client side does the same for a vanished server.
SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
}
SERVER_USER_TIMEOUT_MS = "60000"  # tcp_user_timeout, PostgreSQL 12 and later
CLIENT_KEEPALIVES = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def configure_keepalives(conn: psycopg.Connection[Any]) -> None:
    """Set the server-side TCP keepalives (user-settable) for this session."""
    for name, value in SERVER_KEEPALIVES.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    if conn.info.server_version >= 120000:
        conn.execute("SELECT set_config('tcp_user_timeout', %s, false)", (SERVER_USER_TIMEOUT_MS,))


class DbSession:
    """One reconnecting worker connection: autocommit, keepalives, client checks, pgvector types.

    A psycopg connection serialises its callers but not their transactions, so each thread that
    runs transactions of its own needs its own session."""

    def __init__(self, settings: Settings, application_name: str) -> None:
        self._settings = settings
        self._application_name = application_name[:63]
        self._conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        """The session's connection, reopened if Postgres dropped it."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                log.warning("database connection lost; reconnecting")
            url = libpq_url(self._settings.require_database_url())
            self._conn = psycopg.connect(
                make_conninfo(url, **CLIENT_KEEPALIVES),
                autocommit=True,
                application_name=self._application_name,
            )
            self._conn.execute(
                "SELECT set_config('client_connection_check_interval', %s, false)",
                (CLIENT_CHECK_INTERVAL,),
            )
            configure_keepalives(self._conn)
            register_vector(self._conn)
        return self._conn

    def close(self) -> None:
        """Close the connection (a later connection() opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# Retrying a unit of database work through transient errors.
#
# Transient means psycopg's OperationalError family: connection loss and failover (admin
# shutdown, cannot connect now), deadlock_detected, serialization_failure, lock_not_available.
# Each unit is one transaction, so a retry starts clean; retries never count a delivery attempt.

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Whether running the same transaction again may succeed."""
    return isinstance(exc, psycopg.OperationalError)


def with_db_retry(settings: Settings, fn: Callable[[], T]) -> T:
    """Run fn, retrying with jittered backoff (so two deadlocked workers do not meet again)
    while it fails transiently, for up to settings.db_retry_timeout_s."""
    log_retry = before_sleep_log(log, logging.WARNING)

    def before_sleep(state: RetryCallState) -> None:
        metrics.retry("db")
        log_retry(state)

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_random_exponential(multiplier=0.25, max=5),
        stop=stop_after_delay(settings.db_retry_timeout_s),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)
