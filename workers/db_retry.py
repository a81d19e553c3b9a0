"""Retrying a unit of database work through transient errors.

Transient means psycopg's OperationalError family: connection loss and failover (admin
shutdown, cannot connect now), deadlock_detected, serialization_failure, lock_not_available.
Each unit is one transaction, so a retry starts clean; retries never count a delivery attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import psycopg
from tenacity import (
    RetryCallState,
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from embedq_core.settings import Settings
from workers import metrics

log = logging.getLogger(__name__)

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
