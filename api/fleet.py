"""Embedding live queries on the workers that serve a model (the API loads no model)."""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import RedisError

from embedq_core.manifest import ModelManifest
from embedq_core.query_protocol import (
    TAKEN,
    InputType,
    QueryReply,
    QueryRequest,
    query_queue,
    serving_key,
    working_key,
)
from embedq_core.settings import Settings

log = logging.getLogger(__name__)

# Below the Redis client's socket timeout, so a long wait is several short blocking pops.
_POP_SLICE_S = 2.0


class FleetUnavailable(Exception):
    """No worker of the model answered in time (503); the message names the model."""


class WorkerFailed(Exception):
    """The worker took the request and reported an error (502)."""


def pick_served(redis: Any, candidates: list[ModelManifest]) -> ModelManifest | None:
    """The first candidate some worker serves now (a source exported twice names both), or
    the first candidate when none is served (its 503 then names it)."""
    if len(candidates) > 1:
        try:
            with redis.pipeline() as pipe:
                for manifest in candidates:
                    pipe.exists(serving_key(manifest.manifest_id))
                served = pipe.execute()
        except RedisError:  # the query itself will report the broker's state
            served = [False] * len(candidates)
        for manifest, is_served in zip(candidates, served, strict=True):
            if is_served:
                return manifest
    return candidates[0] if candidates else None


def _pop(redis: Any, key: str, deadline: float) -> bytes | None:
    while (left := deadline - time.monotonic()) > 0:
        popped = redis.blpop([key], timeout=max(0.01, min(_POP_SLICE_S, left)))
        if popped is not None:
            message: bytes = popped[1]
            return message
    return None


def embed_on_fleet(
    redis: Any, settings: Settings, manifest_id: str, texts: list[str], input_type: InputType
) -> QueryReply:
    """Have a worker of manifest_id embed texts now, ahead of its bulk work.

    Raises FleetUnavailable when the broker is down, when no worker takes the request within
    query_pickup_timeout_s, or when a worker that took it does not answer within
    query_timeout_s.
    """
    try:
        return _round_trip(redis, settings, manifest_id, texts, input_type)
    except RedisError as exc:
        raise FleetUnavailable(f"broker unavailable ({type(exc).__name__}); retry later") from exc


def _round_trip(
    redis: Any, settings: Settings, manifest_id: str, texts: list[str], input_type: InputType
) -> QueryReply:
    request = QueryRequest.new(texts, input_type, settings.query_pickup_timeout_s)
    queue = query_queue(manifest_id)
    message = request.encode()
    started = time.monotonic()
    redis.rpush(queue, message)
    first = _pop(redis, request.reply_key, started + settings.query_pickup_timeout_s)
    # Still queued means no worker came: take it back, so none embeds it for nobody. Gone from
    # the queue means a worker took it just now: wait for its answer.
    if first is None and redis.lrem(queue, 1, message):
        raise FleetUnavailable(
            f"no worker for model {manifest_id} answered within "
            f"{settings.query_pickup_timeout_s:g}s; start one (EMBEDQ_MODEL_DIR) or retry"
        )
    raw = first if first not in (None, TAKEN) else None
    deadline = started + settings.query_timeout_s
    while raw is None:
        raw = _pop(redis, request.reply_key, min(deadline, time.monotonic() + _POP_SLICE_S))
        if raw == TAKEN:  # a re-sent "taken" (a client retry on the worker's side)
            raw = None
            continue
        if raw is None and not redis.exists(working_key(request.request_id)):
            # The answer and the end of the working key are one transaction: no key and no
            # answer means the worker died or lost the broker mid-request.
            raw = redis.lpop(request.reply_key)
            if raw is None:
                raise FleetUnavailable(
                    f"the worker for model {manifest_id} that took the request stopped "
                    "answering; retry"
                )
        if raw is None and time.monotonic() >= deadline:
            raise FleetUnavailable(
                f"the worker for model {manifest_id} took the request but did not answer "
                f"within {settings.query_timeout_s:g}s"
            )
    try:
        reply = QueryReply.decode(raw)
    except (ValueError, KeyError) as exc:
        raise WorkerFailed(f"unreadable answer from a worker of {manifest_id}: {exc}") from exc
    if reply.error is not None:
        raise WorkerFailed(f"the worker for model {manifest_id} failed: {reply.error}")
    return reply
