"""Resources a worker process loads once: settings, the embedder, a database connection."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import psycopg
import redis
from pgvector.psycopg import register_vector

from embedq_core.db import libpq_url
from embedq_core.queueing import make_redis
from embedq_core.settings import Settings
from workers.engine import Embedder, EngineConfig

log = logging.getLogger(__name__)

# While a query runs, Postgres checks this often that the client is still there. A worker that
# dies (or is ended by its watchdog) mid-query then loses its session, and with it the batch's
# advisory lock, within seconds instead of when the query would have ended (a lock wait: never).
CLIENT_CHECK_INTERVAL = "2s"


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
                libpq_url(self.settings.require_database_url()),
                autocommit=True,
                application_name=f"embedq-worker {self.worker_name}"[:63],
            )
            self._conn.execute(
                "SELECT set_config('client_connection_check_interval', %s, false)",
                (CLIENT_CHECK_INTERVAL,),
            )
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
