"""Attempts of a step or an index build, counted in Postgres so that one that keeps failing
ends the migration `failed` with its error instead of being retried forever.

An attempt is counted (and committed) before its work starts, so a worker killed mid-attempt
counts too; the counter goes back to 0 when an attempt succeeds. `resume` resets it. Status
reports the attempts that ended without success: the one in progress is not counted.
"""

from __future__ import annotations

from typing import Any, Literal

import psycopg

from migrations.reembed.state import Migration, MigrationNotFound, load, set_fields

Counter = Literal["step_attempts", "index_attempts"]
MAX_ERROR_CHARS = 2000
MAX_RETRY_DELAY_S = 60.0
WHAT = {"step_attempts": "a step", "index_attempts": "the HNSW index build"}

# An attempt runs under a session advisory lock keyed by (its kind, the migration's name): one
# at a time across the fleet, and the lock goes with a killed worker's connection.
LOCK_KIND: dict[Counter, str] = {
    "step_attempts": "embedq_reembed",
    "index_attempts": "embedq_reembed_index",
}
TRY_LOCK_SQL = "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))"
UNLOCK_SQL = "SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))"
# The counters and whether a live session holds each attempt lock, in one statement so that
# an attempt that ends between two reads is not taken for one that failed. pg_locks shows a
# two-int4 advisory key as (classid, objid) with objsubid 2.
_HELD = """EXISTS (
  SELECT 1 FROM pg_locks
  WHERE locktype = 'advisory' AND granted AND objsubid = 2
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND classid = hashtext({kind})::oid AND objid = hashtext(m.name)::oid
)"""
_COUNTERS_SQL = (
    "SELECT m.step_attempts, m.index_attempts, "
    + _HELD.format(kind="%(step)s")
    + ", "
    + _HELD.format(kind="%(index)s")
    + " FROM reembed_migrations m WHERE m.name = %(name)s"
)


def try_lock(conn: psycopg.Connection[Any], counter: Counter, name: str) -> bool:
    """Take the lock an attempt of this kind runs under, if no session holds it."""
    row = conn.execute(TRY_LOCK_SQL, (LOCK_KIND[counter], name)).fetchone()
    return bool(row and row[0])


def unlock(conn: psycopg.Connection[Any], counter: Counter, name: str) -> None:
    """Release the lock try_lock took."""
    conn.execute(UNLOCK_SQL, (LOCK_KIND[counter], name))


def ended_without_success(conn: psycopg.Connection[Any], name: str) -> dict[Counter, int]:
    """Attempts in a row that failed or whose worker died, of steps and of index builds: the
    counters, less an attempt a live worker is making now (counted when it began, it has not
    failed). Between taking its lock and counting itself, an attempt reads one low."""
    row = conn.execute(
        _COUNTERS_SQL,
        {"step": LOCK_KIND["step_attempts"], "index": LOCK_KIND["index_attempts"], "name": name},
    ).fetchone()
    if row is None:
        raise MigrationNotFound(name)
    step, index, step_running, index_running = row
    return {
        "step_attempts": max(step - 1, 0) if step_running else int(step),
        "index_attempts": max(index - 1, 0) if index_running else int(index),
    }


def describe(exc: BaseException) -> str:
    """One line for the error column: the exception's type and message."""
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"[:MAX_ERROR_CHARS]


def begin_attempt(
    conn: psycopg.Connection[Any], m: Migration, counter: Counter, max_attempts: int
) -> bool:
    """Inside the caller's transaction, holding m's row lock: count one more attempt and
    return True, or, when earlier attempts used up the budget without finishing (a process
    killed each time), mark the migration failed and return False."""
    done: int = getattr(m, counter)
    if done >= max_attempts:
        last = m.error or "none recorded (the worker may have died mid-attempt)"
        error = f"{WHAT[counter]} did not complete in {done} attempts; last error: {last}"
        set_fields(conn, m.name, status="failed", error=error[:MAX_ERROR_CHARS])
        return False
    set_fields(conn, m.name, **{counter: done + 1})
    return True


def record_failure(
    conn: psycopg.Connection[Any],
    name: str,
    counter: Counter,
    exc: BaseException,
    max_attempts: int,
) -> tuple[bool, int]:
    """Record an attempt's error; at the last allowed attempt the migration ends `failed`.
    Returns (failed now, attempts so far)."""
    with conn.transaction():
        m = load(conn, name, lock=True)
        attempts: int = getattr(m, counter)
        error = describe(exc)
        if attempts >= max_attempts and m.status == "running":
            set_fields(
                conn,
                name,
                status="failed",
                error=f"{WHAT[counter]} failed {attempts} times; last error: {error}",
            )
            return True, attempts
        set_fields(conn, name, error=f"attempt {attempts} of {max_attempts} failed: {error}")
        return False, attempts


def retry_delay_s(attempts: int, first_delay_s: float) -> float:
    """Exponential backoff: first_delay_s, then twice as long each time, at most a minute."""
    return float(min(first_delay_s * 2 ** max(attempts - 1, 0), MAX_RETRY_DELAY_S))
