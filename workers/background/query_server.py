"""Answers live query embeddings beside the bulk work of the same worker process.

A thread pops requests from the model's query list and embeds them as urgent: the engine
gate lets them in between two bulk engine batches, so a query never waits for a bulk job.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time

import redis

from embedq_core.query_protocol import (
    EXPIRY_SKEW_S,
    REPLY_TTL_S,
    SERVING_TTL_S,
    TAKEN,
    WORKING_TTL_S,
    QueryReply,
    QueryRequest,
    query_queue,
    serving_key,
    working_key,
)
from embedq_core.queueing import make_redis
from embedq_core.settings import Settings
from workers.engine import Embedder, Reranker
from workers.telemetry import metrics

log = logging.getLogger(__name__)

# How often the loop looks at its stop flag: a stopping worker waits up to this long for it (an
# idle BLPOP this often costs Valkey nothing worth counting).
POP_TIMEOUT_S = 0.25
HEARTBEAT_S = 2.0  # well within WORKING_TTL_S and SERVING_TTL_S


class QueryServer:
    """A daemon thread serving one model's query list."""

    def __init__(self, settings: Settings, model: Embedder | Reranker, worker_name: str) -> None:
        self._model = model
        self._manifest_id = model.manifest.manifest_id
        self._queue = query_queue(self._manifest_id)
        # Its own client: a blocking pop must not share a connection with anything else.
        self._redis = make_redis(settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._current: str | None = None  # the request being embedded, for the heartbeat
        # Its member in the serving set: the worker's name (host:pid, as in claimed_by) and a
        # token of this process, since two containers may share a host name and both run as
        # pid 1.
        self._member = f"{worker_name}:{secrets.token_hex(4)}"

    def serve_one(self, timeout_s: float = POP_TIMEOUT_S) -> bool:
        """Pop and answer one request; False when none arrived within timeout_s."""
        popped = self._redis.blpop([self._queue], timeout=timeout_s)
        if popped is None:
            return False
        request = QueryRequest.decode(popped[1])
        if request.expires_at + EXPIRY_SKEW_S < time.time():
            log.info("dropping query %s: its caller gave up", request.request_id)
            metrics.query_expired()
            return True
        self._current = request.request_id
        started = time.perf_counter()
        ok = True
        try:
            self._push(request, TAKEN)
            try:
                reply = self._answer(request)
            except Exception as exc:  # the caller gets the reason instead of a timeout
                log.exception("query %s failed", request.request_id)
                reply = QueryReply.failure(self._manifest_id, f"{type(exc).__name__}: {exc}")
                ok = False
            self._push(request, reply.encode())
        finally:
            # On every path, a broker error included: the heartbeat must stop renewing the
            # request's working key, or its caller waits out the whole query timeout.
            self._current = None
        metrics.query_answered(time.perf_counter() - started, ok)
        log.debug(
            "query %s: %d texts in %.1f ms",
            request.request_id,
            len(request.texts),
            (time.perf_counter() - started) * 1000,
        )
        return True

    def _answer(self, request: QueryRequest) -> QueryReply:
        model = self._model
        if isinstance(model, Reranker):
            if request.query is None:
                raise ValueError(f"{self._manifest_id} is a reranker: it embeds nothing")
            scored = model.score(
                request.query, request.texts, urgent=True,
                max_tokens_per_passage=request.max_tokens_per_text,
            )  # fmt: skip
            return QueryReply(
                self._manifest_id, scored.logits[:, None], scored.token_counts, scored.truncated
            )
        if request.query is not None:
            raise ValueError(f"{self._manifest_id} is an embedder: it reranks nothing")
        result = model.embed(request.texts, request.input_type, urgent=True)
        return QueryReply(
            self._manifest_id,
            result.vectors,
            result.token_counts,
            result.truncated,
            sparse=result.sparse,
        )

    def _push(self, request: QueryRequest, message: bytes) -> None:
        with self._redis.pipeline() as pipe:
            pipe.rpush(request.reply_key, message)
            pipe.expire(request.reply_key, REPLY_TTL_S)
            if message == TAKEN:
                pipe.set(working_key(request.request_id), "1", ex=WORKING_TTL_S)
            else:
                pipe.delete(working_key(request.request_id))
            pipe.execute()

    def _announce(self) -> None:
        """Renew this worker's place in the model's serving set and the current request's
        working key, and drop members whose workers died without leaving."""
        # Scores come from the Redis clock, so one host's clock cannot drop another's worker.
        seconds, micros = self._redis.time()
        now_s = seconds + micros / 1e6
        key = serving_key(self._manifest_id)
        with self._redis.pipeline() as pipe:
            pipe.zadd(key, {self._member: now_s + SERVING_TTL_S})
            pipe.zremrangebyscore(key, "-inf", now_s)
            pipe.expire(key, SERVING_TTL_S)  # the last worker's death ends the key too
            current = self._current
            if current is not None:
                pipe.set(working_key(current), "1", ex=WORKING_TTL_S)
            pipe.execute()

    def _beat(self) -> None:
        """Announce every HEARTBEAT_S, also while a long request is being embedded (the serving
        loop is busy then)."""
        while True:
            try:
                self._announce()
            except redis.RedisError as exc:
                log.warning("query server heartbeat: broker unavailable (%s)", exc)
            if self._stop.wait(HEARTBEAT_S):
                return

    def _withdraw(self) -> None:
        try:
            self._redis.zrem(serving_key(self._manifest_id), self._member)
        except redis.RedisError as exc:  # the member lapses within SERVING_TTL_S anyway
            log.warning("query server: could not withdraw from the serving set (%s)", exc)

    def run(self) -> None:
        """Serve until stopped; a broker outage is waited out, and nothing else ends the
        thread either (a malformed message is logged and dropped)."""
        while not self._stop.is_set():
            try:
                self.serve_one()
            except redis.RedisError as exc:
                log.warning("query server: broker unavailable (%s); retrying", exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("query server: request dropped")
                self._current = None

    def start(self) -> None:
        """Run in a daemon thread beside the Celery consumer."""
        self._thread = threading.Thread(target=self.run, name="embedq-queries", daemon=True)
        self._thread.start()
        self._heartbeat = threading.Thread(
            target=self._beat, name="embedq-queries-heartbeat", daemon=True
        )
        self._heartbeat.start()

    def stop(self) -> None:
        """Leave the serving set at once (the API then routes a source's queries to another
        export), stop the thread after the request in hand, and close the client."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=10)
        self._withdraw()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._redis.close()
