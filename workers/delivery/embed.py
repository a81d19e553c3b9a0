"""A claimed batch's items sorted out and embedded, and a failed delivery's reason recorded.

workers/delivery/run.py runs a delivery; this is its middle: which items must be embedded (an
item past
its attempts gives up, an unchanged one is not embedded again), the one engine call for the
batch and its companions, and what a failure leaves on the items for the reconciler's re-send.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from functools import partial
from typing import Any, NoReturn

import psycopg

from embedq_core.lifecycle.claims import (
    ClaimedBatch,
    ClaimedItem,
    count_attempt,
    record_batch_error,
    refund_attempt,
)
from workers.background.watchdog import time_limit
from workers.context import WorkerContext
from workers.delivery.coalesce import HeldBatch, embed_together, texts_together
from workers.delivery.db import is_transient
from workers.delivery.isolation import Embedded
from workers.delivery.lock import BatchBusy
from workers.delivery.rows import Action, decide, read_stored
from workers.engine import Embedder, PreparedTexts
from workers.telemetry import metrics
from workers.telemetry.metrics import BatchTimer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedBatch:
    """A claimed batch with its vectors computed, ready to be written."""

    held: HeldBatch
    candidates: list[ClaimedItem]
    gave_up: dict[str, str]
    embedded: Embedded
    model_id: str


@dataclass(frozen=True)
class Plan:
    """A claimed batch's items sorted out before the engine runs."""

    held: HeldBatch
    candidates: list[ClaimedItem]
    gave_up: dict[str, str]
    to_embed: list[ClaimedItem]


def plan_all(ctx: WorkerContext, held: list[HeldBatch], model_id: str) -> list[Plan]:
    """Sort out each batch's items. held[0] is the delivery's own batch: BatchBusy on it is
    raised; a companion that another worker took over (after a reconnect lost its lock) is
    dropped."""
    plans: list[Plan] = []
    for each in held:
        try:
            plans.append(_plan(ctx, each, model_id))
        except BatchBusy:
            if each is held[0]:
                raise
            each.lock.release()
    return plans


def tokenise_planned(ctx: WorkerContext, plans: list[Plan]) -> PreparedTexts | None:
    """Tokenise what the planned batches must embed, on this thread, so that the engine call
    only runs the model; None when tokenising ahead is off, when there is nothing to embed, or
    when tokenising failed (the engine call then tokenises, and a text that cannot be embedded
    fails alone)."""
    if not ctx.tokenise_ahead or any(plan.held.batch.chunking for plan in plans):
        return None  # (documents are tokenised whole, then cut: embed_together does it)
    texts = texts_together([plan.to_embed for plan in plans])
    if not texts:
        return None
    try:
        return ctx.embedder.prepare(texts)
    except Exception as exc:
        log.warning("tokenising %d texts ahead failed (%s); the engine call will", len(texts), exc)
        return None


def embed_planned(
    ctx: WorkerContext, plans: list[Plan], tokenised: PreparedTexts | None, model_id: str
) -> list[EmbeddedBatch]:
    """Embed what each planned batch must write (tokenised: tokenise_planned's), all in one
    engine call; on failure, record it on the batches (the engine probed: a broken one ends the
    worker) and raise. A batch embedded alone spends an attempt first; a group embedded together
    spends none (job_state)."""
    counted = False
    try:
        if any(plan.held.batch.claimed_before for plan in plans):
            # A batch tried before may hold the text that killed a worker: before it runs, the
            # batches embedded ahead of it are committed, so if it kills this worker too, they
            # spend no attempt on its account.
            ctx.mode.wait_for_writes()
        if len(plans) == 1 and plans[0].candidates:  # (one whose items all gave up: no try)
            plans[0].held.lock.run(partial(count_attempt, batch=plans[0].held.batch))
            counted = True
        embedded = embed_together(
            ctx.embedder,
            [plan.to_embed for plan in plans],
            tokenised,
            [plan.held.batch.chunking for plan in plans],
        )
    except BatchBusy:
        raise  # another worker took the batch over (after a reconnect): its fate is theirs
    except Exception as exc:
        record_failures(ctx, [plan.held for plan in plans], exc, counted=counted)
        raise
    return [
        EmbeddedBatch(plan.held, plan.candidates, plan.gave_up, result, model_id)
        for plan, result in zip(plans, embedded, strict=True)
    ]


def embed_behind(
    ctx: WorkerContext,
    plans: list[Plan],
    tokenised: PreparedTexts | None,
    model_id: str,
    timer: BatchTimer,
) -> list[EmbeddedBatch]:
    """embed_planned on the engine thread (claiming ahead); on failure the batches' locks are
    released here, as the consumer thread would have."""
    timer.take_over()
    first = plans[0].held.batch
    what = f"embedding job {first.job_id} batch {first.batch_no}"
    try:
        with time_limit(ctx.settings.task_time_limit_s, what, backstop=False):
            prepared = embed_planned(ctx, plans, tokenised, model_id)
    except BaseException:
        for plan in plans:
            plan.held.lock.release()
        timer.finish()
        raise
    timer.hand_over()
    return prepared


def _plan(ctx: WorkerContext, held: HeldBatch, model_id: str) -> Plan:
    batch = held.batch
    max_attempts = ctx.settings.max_task_attempts
    gave_up = {
        item.external_id: f"gave up after {item.attempts} attempts"
        + (f"; last error: {item.last_error}" if item.last_error else "")
        for item in batch.items
        if item.attempts >= max_attempts
    }
    candidates = [i for i in batch.items if i.external_id not in gave_up]
    # An unlocked read, only to skip embedding what will not be written; the write
    # transaction decides again on locked rows.
    stored = held.lock.run(
        lambda conn: read_stored(
            conn,
            batch.vector_table,
            [i.external_id for i in candidates],
            lock=False,
            documents=batch.chunking is not None,
        )
    )
    to_embed = [
        i
        for i in candidates
        if decide(i.seq, i.content_hash, stored.get(i.external_id), model_id) is Action.WRITE
    ]
    return Plan(held, candidates, gave_up, to_embed)


def record_failures(
    ctx: WorkerContext,
    held: list[HeldBatch],
    exc: Exception,
    probe_engine: bool = True,
    counted: bool = False,
) -> None:
    """A delivery failed on these batches: note the reason on their pending items for the
    reconciler's re-send. If the engine cannot embed even a probe, the worker leaves; the
    attempt (`counted`: this delivery spent one) is given back, up to max_engine_refunds times
    per batch, after which the failure counts as the batch's own."""
    for _ in held:
        metrics.batch_failed(transient=is_transient(exc))
    if is_transient(exc):
        # Past db_retry_timeout_s: the claims are recorded, so the reconciler sends the
        # batches again once Postgres answers.
        return
    broken = probe_engine and not engine_works(ctx.embedder)
    reason = f"{type(exc).__name__}: {exc}"
    for each in held:
        # BatchBusy: another worker took it over (after a reconnect): its fate is theirs.
        with contextlib.suppress(BatchBusy):
            if broken:
                if not counted:
                    continue  # nothing spent, nothing to give back: the re-send tries again
                refunded = each.lock.run(
                    partial(
                        refund_attempt,
                        batch=each.batch,
                        max_refunds=ctx.settings.max_engine_refunds,
                    )
                )
                if refunded:
                    continue
            why = reason
            if broken:
                why += (
                    " (the engine then failed a probe text too; this batch's attempts were"
                    f" given back {ctx.settings.max_engine_refunds} times already)"
                )
            # The items stay pending with the reason: the reconciler sends the batch again,
            # and the attempt counter ends the retries.
            each.lock.run(partial(_record_error, batch=each.batch, reason=why))
    if broken:
        leave()


def _record_error(conn: psycopg.Connection[Any], batch: ClaimedBatch, reason: str) -> None:
    with conn.transaction():
        record_batch_error(conn, batch, reason)


# A worker whose engine fails on everything leaves, instead of failing the fleet's batches.
#
# When a delivery fails and even a one-word probe cannot be embedded, the engine is at fault (a
# lost CUDA context, a corrupted runtime), not the batch: the delivery's attempt is given back and
# the process exits, so its lock dies with its session and the reconciler sends the batch to a
# healthy worker. Counting the attempt would instead fail every batch this worker touches once
# `max_task_attempts` deliveries had gone to it. A restarted worker that still cannot embed stops at
# its own warm-up, before it consumes anything.

EXIT_CODE = 71  # distinct from the watchdog's 70, so the supervisor's log says which
PROBE_TEXT = "warm-up 预热"


def engine_works(embedder: Embedder) -> bool:
    """Whether the engine can still embed the probe text."""
    try:
        embedder.embed([PROBE_TEXT], observed=False)
    except Exception:
        log.exception("the engine cannot embed even the probe text")
        return False
    return True


def leave() -> NoReturn:
    """End the process at once (Celery's shutdown would ack and carry on)."""
    log.critical(
        "engine broken: this worker exits (code %d) so a healthy one takes its work", EXIT_CODE
    )
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(EXIT_CODE)
