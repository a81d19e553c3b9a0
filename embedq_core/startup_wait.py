"""Bounded waits at process start for what a process needs (Postgres with the schema at head,
the broker, an exported model), each logged, so a stack started all at once (podman ignores
compose's health conditions) comes up in any order, and a missing dependency fails with its
name instead of a traceback."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis

from embedq_core.db import libpq_url
from embedq_core.manifest import MANIFEST_FILENAME
from embedq_core.settings import Settings

log = logging.getLogger(__name__)

# Between two checks: short at first, at most this long, so a stack that is up is seen at once.
MAX_CHECK_INTERVAL_S = 5.0


class DependencyUnavailable(RuntimeError):
    """A dependency was still not ready when the startup wait ran out."""


def where(url: str) -> str:
    """host:port of a URL, without its credentials, for log lines."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def wait_until_ready(name: str, check: Callable[[], str | None], timeout_s: float) -> None:
    """Call check until it returns None (ready) or timeout_s passes; check returns why it is not
    ready yet. Logs the first wait, every change of reason, and the time it took."""
    started = time.monotonic()
    interval_s = 0.25
    last_reason: str | None = None
    while True:
        try:
            reason = check()
        except Exception as exc:  # any failure to reach it is a reason to wait, not to crash
            first_line = (str(exc).strip().splitlines() or [""])[0]
            reason = f"{type(exc).__name__}: {first_line}"
        waited_s = time.monotonic() - started
        if reason is None:
            if last_reason is not None:
                log.info("%s is ready after %.1f s", name, waited_s)
            return
        if waited_s >= timeout_s:
            raise DependencyUnavailable(
                f"{name} not ready after {timeout_s:g} s (EMBEDQ_STARTUP_WAIT_S): {reason}"
            )
        if reason != last_reason:
            log.warning("waiting for %s (up to %g s): %s", name, timeout_s, reason)
            last_reason = reason
        time.sleep(min(interval_s, timeout_s - waited_s))
        interval_s = min(interval_s * 2, MAX_CHECK_INTERVAL_S)


def postgres_check(database_url: str, schema_head: str | None = None) -> Callable[[], str | None]:
    """Ready when Postgres accepts our login and, with schema_head, the schema is at it."""

    def check() -> str | None:
        with psycopg.connect(libpq_url(database_url), connect_timeout=5) as conn:
            if schema_head is None:
                conn.execute("SELECT 1")
                return None
            row = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
            if not row or not row[0]:
                return "no schema yet (run `embedq db upgrade`: compose's migrate service)"
            version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            current = version[0] if version else None
            if current != schema_head:
                return f"schema at {current}, this release needs {schema_head} (embedq db upgrade)"
            return None

    return check


def redis_check(redis_url: str) -> Callable[[], str | None]:
    """Ready when the broker answers PING (with our password)."""

    def check() -> str | None:
        client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
        return None

    return check


def model_check(model_dir: Path) -> Callable[[], str | None]:
    """Ready when the export step has written the model's manifest."""

    def check() -> str | None:
        if (model_dir / MANIFEST_FILENAME).is_file():
            return None
        return f"no {MANIFEST_FILENAME} in {model_dir} yet (the export step writes it last)"

    return check


def wait_for_database(settings: Settings, schema_head: str | None = None) -> None:
    """Wait for Postgres (and the schema at schema_head, when given)."""
    url = settings.require_database_url()
    what = f"Postgres at {where(libpq_url(url))}" + (" with the schema" if schema_head else "")
    wait_until_ready(what, postgres_check(url, schema_head), settings.startup_wait_s)


def wait_for_broker(settings: Settings) -> None:
    """Wait for the Redis-protocol broker."""
    url = settings.require_redis_url()
    wait_until_ready(f"the broker at {where(url)}", redis_check(url), settings.startup_wait_s)


def wait_for_model(settings: Settings, model_dir: Path) -> None:
    """Wait for an exported model's manifest."""
    wait_until_ready(f"the model in {model_dir}", model_check(model_dir), settings.startup_wait_s)
