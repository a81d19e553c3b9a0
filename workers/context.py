"""Resources a worker process loads once: settings, the embedder, a database connection."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import redis
from pgvector.psycopg import register_vector

from embedq_core.db import libpq_url
from embedq_core.queueing import make_redis
from embedq_core.settings import Settings
from workers.engine import Embedder, EngineConfig

log = logging.getLogger(__name__)


class WorkerContext:
    """Holds the model (loaded and warmed once) and one reconnecting database connection."""

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self.settings = settings
        self.embedder = embedder
        self._conn: psycopg.Connection[Any] | None = None
        self._redis: redis.Redis | None = None

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
                libpq_url(self.settings.require_database_url()), autocommit=True
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
