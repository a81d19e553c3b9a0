"""DDL on the user's live table with a short lock_timeout, retried with backoff.

ALTER TABLE, CREATE TRIGGER and LOCK TABLE wait for every transaction already using the
table, and while they wait, every later query of the product queues behind them: one long
reader would stall the product for as long as it reads. With lock_timeout, a waiting DDL gives
up after `lock_timeout_s`, its transaction rolls back (nothing half-done), the product's
queries proceed, and the DDL tries again after a backoff. So the product waits at most
`lock_timeout_s` at a time, and the operator gets a clear error naming the session in the way
if the lock never comes within `retry_timeout_s`.

CREATE INDEX CONCURRENTLY is deliberately not run under lock_timeout: its SHARE UPDATE
EXCLUSIVE lock does not conflict with reads or writes, so its waits never stall the product,
and a timeout late in a long build would throw the build away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from embedq_core.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BACKOFF_S = 10.0

HOLDERS_SQL = """
SELECT a.pid, coalesce(a.state, '?'), date_trunc('second', now() - a.xact_start),
       left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.relation = to_regclass(%s) AND l.granted
  AND a.pid <> pg_backend_pid()
ORDER BY a.xact_start LIMIT 5
"""


class LockTimeout(RuntimeError):
    """The table's lock was not granted within the retry budget; nothing was changed."""


@dataclass(frozen=True)
class LockPolicy:
    """How long one attempt may wait for a lock, and how long to keep trying."""

    lock_timeout_s: float
    retry_timeout_s: float
    # Told about each retry instead of the log (the CLI prints it, so an operator sees why
    # start is waiting).
    on_retry: Callable[[str], None] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, on_retry: Callable[[str], None] | None = None
    ) -> LockPolicy:
        """The policy EMBEDQ_REEMBED_LOCK_TIMEOUT_S and _LOCK_RETRY_TIMEOUT_S describe."""
        return cls(settings.reembed_lock_timeout_s, settings.reembed_lock_retry_timeout_s, on_retry)


def limit_lock_wait(conn: psycopg.Connection[Any], policy: LockPolicy) -> None:
    """From here to the end of the current transaction, a lock wait fails after the timeout."""
    timeout_ms = max(1, round(policy.lock_timeout_s * 1000))
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{timeout_ms}ms",))


def _holders(conn: psycopg.Connection[Any], table: sql.Identifier) -> str:
    try:
        rows = conn.execute(HOLDERS_SQL, (table.as_string(conn),)).fetchall()
    except psycopg.Error:  # diagnostics only: never hide the real error behind them
        return "unknown sessions"
    if not rows:
        return "sessions that have finished since"
    return "; ".join(f"pid {pid} ({state} for {age}: {query})" for pid, state, age, query in rows)


def with_lock_retries(
    conn: psycopg.Connection[Any],
    table: sql.Identifier,
    action: str,
    policy: LockPolicy,
    attempt: Callable[[], T],
) -> T:
    """Run `attempt` (one transaction that calls limit_lock_wait before its DDL) until it gets
    its locks, backing off between tries; LockTimeout once the retry budget is spent."""
    started = time.monotonic()
    name = table.as_string(conn)

    def tell(state: RetryCallState) -> None:
        delay = state.next_action.sleep if state.next_action else 0.0
        message = (
            f"{action}: {name} is locked by another transaction; gave up waiting after"
            f" {policy.lock_timeout_s:g}s (attempt {state.attempt_number}), retrying in"
            f" {delay:.1f}s"
        )
        if policy.on_retry is not None:
            policy.on_retry(message)
        else:
            log.warning(message)

    retrying = Retrying(
        retry=retry_if_exception_type(psycopg.errors.LockNotAvailable),
        wait=wait_exponential_jitter(
            initial=policy.lock_timeout_s,
            max=max(MAX_BACKOFF_S, policy.lock_timeout_s),
            jitter=policy.lock_timeout_s / 2,
        ),
        stop=stop_after_delay(policy.retry_timeout_s),
        before_sleep=tell,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except psycopg.errors.LockNotAvailable as exc:
        raise LockTimeout(
            f"{action}: could not lock {name} within {policy.lock_timeout_s:g}s per attempt"
            f" over {time.monotonic() - started:.0f}s; held by {_holders(conn, table)}."
            " Nothing was changed: run it again once that transaction ends, or raise"
            " EMBEDQ_REEMBED_LOCK_RETRY_TIMEOUT_S."
        ) from exc
