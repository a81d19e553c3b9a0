"""The Celery app configuration and task names, shared by the API (which only sends by name)
and the workers (which register the tasks)."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from celery import Celery

from embedq_core.settings import Settings

EMBED_BATCH_TASK = "embedq.embed_batch"
REEMBED_STEP_TASK = "embedq.reembed_step"
# A header on each embed_batch message: which send of its batch it is (0: the API's first send;
# n: the reconciler's n-th send). A header, not an argument, so workers of the version before
# take these messages and the new ones take theirs. Recorded on delivery (job_batches).
SEND_NO_HEADER = "embedq_send_no"
FIRST_SEND_NO = 0


def embed_queue(manifest_id: str) -> str:
    """Each model has its own queue, so a batch only reaches workers that load that model."""
    return f"embed.{manifest_id}"


def reembed_queue(manifest_id: str) -> str:
    """Re-embedding migrations of a model get a queue of their own, which yields to live jobs."""
    return f"reembed.{manifest_id}"


# kombu's Redis transport keeps one list per priority step: name, then name + sep + step.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
# One BRPOP reads those lists in step order, so a lower number is served first. New work goes
# at NEW_WORK_PRIORITY; the reconciler re-sends lost batches at RESEND_PRIORITY, so a recovered
# batch waits behind no backlog.
RESEND_PRIORITY = 0
NEW_WORK_PRIORITY = 3


def priority_list(queue: str, step: int) -> str:
    """The Redis list that holds a queue's messages of one priority step (0, 3, 6 or 9)."""
    return f"{queue}{_PRIORITY_SEP}{step}" if step else queue


def queue_depth(redis_client: Any, queue: str) -> int:
    """Messages waiting in a queue (not counting those a worker holds)."""
    names = [priority_list(queue, step) for step in (0, *_PRIORITY_STEPS)]
    with redis_client.pipeline() as pipe:
        for name in names:
            pipe.llen(name)
        return int(sum(pipe.execute()))


def make_redis(settings: Settings) -> redis.Redis:
    """A Redis client for queue depths and the broker epoch; short timeouts, so an outage is
    noticed instead of waited on."""
    return redis.Redis.from_url(
        settings.require_redis_url(), socket_timeout=5, socket_connect_timeout=2
    )


def make_async_redis(settings: Settings) -> redis.asyncio.Redis:
    """make_redis's client for an event loop (the API's live queries await their answers)."""
    return redis.asyncio.Redis.from_url(
        settings.require_redis_url(), socket_timeout=5, socket_connect_timeout=2
    )


def make_celery(settings: Settings) -> Celery:
    """A Celery app with the reliability settings the design requires."""
    app = Celery("embedq", broker=settings.require_redis_url(), set_as_current=False)
    app.conf.update(
        # Ack only after the batch is written; a killed worker's batch is redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # On Redis a solo worker still takes one message beyond the batch it runs; if the run
        # kills it, that message waits out the visibility timeout (an hour) before anyone sees
        # it again. Take a message only when free (Celery 5.6+, Redis brokers).
        worker_disable_prefetch=True,
        # Must exceed the longest batch, or Redis redelivers a batch still being worked on.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        # A publish to a dead broker fails fast; the job is in Postgres and will be re-sent.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        # Every message sent by name without a priority (new batches, re-embedding steps).
        task_routes={"embedq.*": {"priority": NEW_WORK_PRIORITY}},
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    return app
