"""Attempts of a step or an index build, counted in Postgres so that one that keeps failing
ends the migration `failed` with its error instead of being retried forever.

An attempt is counted (and committed) before its work starts, so a worker killed mid-attempt
counts too; the counter goes back to 0 when an attempt succeeds. `resume` resets it.
"""

from __future__ import annotations

from typing import Any, Literal

import psycopg

from migrations.reembed.state import Migration, load, set_fields

Counter = Literal["step_attempts", "index_attempts"]
MAX_ERROR_CHARS = 2000
MAX_RETRY_DELAY_S = 60.0
WHAT = {"step_attempts": "a step", "index_attempts": "the HNSW index build"}


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
