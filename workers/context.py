"""Resources a worker process loads once: settings, the embedder, a database connection."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import psycopg
import redis
from pgvector.psycopg import register_vector
from psycopg.conninfo import make_conninfo

from embedq_core.db import libpq_url
from embedq_core.queueing import make_redis
from embedq_core.settings import Settings
from workers.engine import Embedder, EngineConfig

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


class WorkerContext:
    """Holds the model (loaded and warmed once) and one reconnecting database connection."""

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self.settings = settings
        self.embedder = embedder
        self._conn: psycopg.Connection[Any] | None = None
        self._redis: redis.Redis | None = None
        # Recorded with each claim and shown in pg_stat_activity: which process holds a batch.
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"

    @classmethod
    def load(cls, settings: Settings) -> WorkerContext:
        """Load the model named by settings.model_dir and warm it with one embedding."""
        if settings.model_dir is None:
            raise RuntimeError("EMBEDQ_MODEL_DIR is not set: point it at an exported model")
        embedder = Embedder.from_model_dir(settings.model_dir, EngineConfig.from_settings(settings))
        embedder.warm_up()
        embedder.embed(["warm-up 预热"])
        return cls(settings, embedder)

    def connection(self) -> psycopg.Connection[Any]:
        """The worker's connection, reopened if Postgres dropped it."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                log.warning("database connection lost; reconnecting")
            self._conn = psycopg.connect(
                make_conninfo(libpq_url(self.settings.require_database_url()), **CLIENT_KEEPALIVES),
                autocommit=True,
                application_name=f"embedq-worker {self.worker_name}"[:63],
            )
            self._conn.execute(
                "SELECT set_config('client_connection_check_interval', %s, false)",
                (CLIENT_CHECK_INTERVAL,),
            )
            configure_keepalives(self._conn)
            register_vector(self._conn)
        return self._conn

    def redis(self) -> redis.Redis:
        """A client for reading queue depths."""
        if self._redis is None:
            self._redis = make_redis(self.settings)
        return self._redis

    def close(self) -> None:
        """Close the database and Redis connections."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None
