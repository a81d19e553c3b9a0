"""Embedding live queries on the workers that serve a model (the API loads no model)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from embedq_core.manifest import ModelManifest
from embedq_core.query_protocol import (
    TAKEN,
    InputType,
    QueryReply,
    QueryRequest,
    query_queue,
    relevance,
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


class FleetBusy(Exception):
    """Too many live requests already wait for this model (429 + Retry-After)."""


class QueryAdmission:
    """Live requests waiting for a model's workers, at most max_waiting per model; the rest
    are refused at once instead of queueing behind them. Used on the event loop only, so it
    needs no lock."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self.waiting: Counter[str] = Counter()

    @contextmanager
    def admit(self, manifest_id: str) -> Iterator[None]:
        """Count a waiting request for its model, or raise FleetBusy."""
        if self.waiting[manifest_id] >= self.max_waiting:
            raise FleetBusy(
                f"{self.max_waiting} live requests already wait for model {manifest_id} "
                "(EMBEDQ_MAX_WAITING_QUERIES_PER_MODEL); retry later"
            )
        self.waiting[manifest_id] += 1
        try:
            yield
        finally:
            self.waiting[manifest_id] -= 1


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


async def _pop(redis: AsyncRedis, key: str, deadline: float) -> bytes | None:
    while (left := deadline - time.monotonic()) > 0:
        popped = await redis.blpop([key], timeout=max(0.01, min(_POP_SLICE_S, left)))
        if popped is not None:
            return cast(bytes, popped[1])  # no decode_responses: values stay bytes
    return None


async def embed_on_fleet(
    redis: AsyncRedis,
    admission: QueryAdmission,
    settings: Settings,
    manifest_id: str,
    texts: list[str],
    input_type: InputType,
    query: str | None = None,
    max_tokens_per_text: int | None = None,
) -> QueryReply:
    """Have a worker of manifest_id embed texts now, ahead of its bulk work (or, with `query`,
    a reranker score them against it). Awaits the answer on the event loop (no thread waits
    on the broker).

    Raises FleetBusy when max_waiting_queries_per_model requests already wait for the model,
    FleetUnavailable when the broker is down, when no worker takes the request within
    query_pickup_timeout_s, or when a worker that took it does not answer within
    query_timeout_s.
    """
    with admission.admit(manifest_id):
        try:
            request = QueryRequest.new(
                texts, input_type, settings.query_pickup_timeout_s, query, max_tokens_per_text
            )
            return await _round_trip(redis, settings, manifest_id, request)
        except RedisError as exc:
            raise FleetUnavailable(
                f"broker unavailable ({type(exc).__name__}); retry later"
            ) from exc


async def _round_trip(
    redis: AsyncRedis, settings: Settings, manifest_id: str, request: QueryRequest
) -> QueryReply:
    queue = query_queue(manifest_id)
    message = request.encode()
    started = time.monotonic()
    await redis.rpush(queue, message)
    first = await _pop(redis, request.reply_key, started + settings.query_pickup_timeout_s)
    # Still queued means no worker came: take it back, so none embeds it for nobody. Gone from
    # the queue means a worker took it just now: wait for its answer.
    # redis-py's stubs want str; the client sends bytes as they are.
    if first is None and await redis.lrem(queue, 1, cast(str, message)):
        raise FleetUnavailable(
            f"no worker for model {manifest_id} answered within "
            f"{settings.query_pickup_timeout_s:g}s; start one (EMBEDQ_MODEL_DIR) or retry"
        )
    raw = first if first not in (None, TAKEN) else None
    deadline = started + settings.query_timeout_s
    while raw is None:
        raw = await _pop(redis, request.reply_key, min(deadline, time.monotonic() + _POP_SLICE_S))
        if raw == TAKEN:  # a re-sent "taken" (a client retry on the worker's side)
            raw = None
            continue
        if raw is None and not await redis.exists(working_key(request.request_id)):
            # The answer and the end of the working key are one transaction: no key and no
            # answer means the worker died or lost the broker mid-request.
            raw = cast(bytes | None, await redis.lpop(request.reply_key))
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


async def rerank_on_fleet(
    redis: AsyncRedis,
    admission: QueryAdmission,
    settings: Settings,
    manifest: ModelManifest,
    query: str,
    texts: list[str],
    max_tokens_per_text: int | None = None,
) -> tuple[npt.NDArray[np.float64], int]:
    """Have a worker of the reranker score texts against query now: each text's relevance, in
    order, and the tokens the model read."""
    reply = await embed_on_fleet(
        redis,
        admission,
        settings,
        manifest.manifest_id,
        texts,
        "passage",
        query=query,
        max_tokens_per_text=max_tokens_per_text,
    )
    if reply.vectors.shape != (len(texts), 1):
        raise WorkerFailed(f"the worker for {manifest.manifest_id} sent no scores")
    return relevance(reply.vectors[:, 0], manifest.normalize), sum(reply.token_counts)
