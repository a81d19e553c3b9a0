"""Resources a worker process loads once: settings, the embedder, database sessions."""

from __future__ import annotations

import os
import socket
from typing import Any

import psycopg
import redis

from embedq_core.queueing import make_redis
from embedq_core.settings import Settings
from workers.delivery.db import DbSession
from workers.delivery.lanes import RunMode, run_mode
from workers.engine import Embedder, EngineConfig


class WorkerContext:
    """Holds the model (loaded and warmed once), the consumer thread's database session and the
    sessions batches are written on."""

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self.settings = settings
        self.embedder = embedder
        # Recorded with each claim and shown in pg_stat_activity: which process holds a batch.
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        self._session = DbSession(settings, f"embedq-worker {self.worker_name}")
        self.mode: RunMode = run_mode(settings, self.worker_name)
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

    @property
    def tokenise_ahead(self) -> bool:
        """Whether the consumer tokenises a batch before the engine call (unset in the
        settings: where the engine runs on a GPU, see Settings.tokenise_ahead)."""
        if self.settings.tokenise_ahead is not None:
            return self.settings.tokenise_ahead
        return self.embedder.backend == "onnxruntime-cuda"

    def connection(self) -> psycopg.Connection[Any]:
        """The consumer thread's connection, reopened if Postgres dropped it."""
        return self._session.connection()

    def redis(self) -> redis.Redis:
        """A client for reading queue depths."""
        if self._redis is None:
            self._redis = make_redis(self.settings)
        return self._redis

    def close(self) -> None:
        """Finish the batches still being written, then close every connection."""
        self.mode.stop()
        self._session.close()
        if self._redis is not None:
            self._redis.close()
            self._redis = None
