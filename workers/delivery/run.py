"""Processing one delivery: claim its batch's pending items, embed, write vectors, finish items.

One delivery is one claim, and one attempt. Transient database errors (connection loss,
failover, deadlock, serialization failure) run the failed transaction again with the claim and
the vectors already computed: they spend no attempt. A text the engine cannot embed fails
alone. A write error fails the delivery with its reason on the items; the reconciler sends the
batch again and that delivery writes item by item, so a poison item fails alone. A small batch
takes other waiting small batches of its model into the same engine call
(workers/delivery/coalesce.py); each is still written and finished on its own. How the engine
call and the write run beside the consumer thread is the worker's run mode
(workers/delivery/lanes.py: in line, write behind, claim ahead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg

from embedq_core.lifecycle.claims import claim_batch
from embedq_core.lifecycle.delivery import date_claim
from workers.background.watchdog import time_limit
from workers.context import WorkerContext
from workers.delivery.coalesce import HeldBatch, claim_companions
from workers.delivery.db import DbSession, is_transient
from workers.delivery.document_store import write_document_batch
from workers.delivery.embed import (
    EmbeddedBatch,
    Plan,
    embed_behind,
    embed_planned,
    plan_all,
    record_failures,
    tokenise_planned,
)
from workers.delivery.lock import BatchBusy, BatchLock
from workers.delivery.store import BatchOutcome, fail_all, write_batch
from workers.engine import PreparedTexts
from workers.telemetry import metrics
from workers.telemetry.metrics import BatchTimer

log = logging.getLogger(__name__)

__all__ = ["BatchOutcome", "ClaimNotRecorded", "process_batch"]


class ClaimNotRecorded(Exception):
    """Postgres stayed unreachable through db_retry_timeout_s before this delivery's claim was
    recorded. Postgres then knows nothing of the delivery, so its message must go back to the
    queue: acknowledged, the batch would wait for the unclaimed-send backstop (an hour)."""


@dataclass
class PlannedDelivery:
    """A claimed delivery with its plans, as the run mode moves it through the engine and the
    writer (workers/delivery/lanes.Delivery)."""

    ctx: WorkerContext
    lane: DbSession
    plans: list[Plan]
    tokenised: PreparedTexts | None
    model_id: str
    timer: BatchTimer
    handed_over: bool = False

    def hand_over(self) -> None:
        self.timer.hand_over()
        self.handed_over = True

    def embed(self) -> list[EmbeddedBatch]:
        return embed_planned(self.ctx, self.plans, self.tokenised, self.model_id)

    def embed_behind(self) -> list[EmbeddedBatch]:
        return embed_behind(self.ctx, self.plans, self.tokenised, self.model_id, self.timer)

    def store(self, embedded: list[EmbeddedBatch]) -> BatchOutcome:
        return _store_all(self.ctx, self.lane, embedded, self.timer)


def process_batch(
    ctx: WorkerContext, job_id: str, batch_no: int, send_no: int | None = None
) -> BatchOutcome:
    """Claim and embed one batch (with waiting small batches of its model when it is small),
    then write each, as the worker's run mode says: the writer thread ends the batches when it
    writes behind; claiming ahead, the engine thread embeds them and this one returns once they
    are claimed. `send_no`: which send of the batch the delivered message is (None: unknown).
    Safe to run again, or twice at once, for the same batch."""
    lane = ctx.mode.free_lane()
    if lane is None:
        # Every lane holds a batch still to be embedded or written. Date a claim first: this
        # message was fetched after the last one was acknowledged, and if the worker dies while
        # waiting, the reconciler must find the batch by Postgres's grace rule, not an hour later.
        _date_claim(ctx.connection, job_id, batch_no, delivered=True, send_no=send_no)
        lane = ctx.mode.lane()
    lock = BatchLock(ctx.settings, lane, job_id, batch_no)
    timer = metrics.start_batch()
    locks = [lock]  # released here unless the delivery was handed over
    delivery: PlannedDelivery | None = None
    try:
        with timer.stage("claim"):
            try:
                batch = lock.run(
                    partial(
                        claim_batch,
                        job_id=job_id,
                        batch_no=batch_no,
                        worker=ctx.worker_name,
                        delivered=True,
                        send_no=send_no,
                    )
                )
            except Exception as exc:
                if is_transient(exc):  # lock.run retried it until db_retry_timeout_s ran out
                    raise ClaimNotRecorded(f"job {job_id} batch {batch_no}: {exc}") from exc
                raise
        if batch is None:
            return BatchOutcome(0, 0, skipped_reason="job not found")
        if not batch.items:
            return BatchOutcome(0, 0, skipped_reason="nothing pending (already done)")
        timer.queue_wait(batch.queued_s)
        if batch.claimed_before:
            metrics.retry("redelivery")
        model_id = ctx.embedder.manifest.manifest_id
        if batch.manifest_id != model_id:
            return _wrong_model(HeldBatch(lock, batch), model_id)
        with timer.stage("claim"):
            companions = claim_companions(ctx, lane, batch)
        locks += [each.lock for each in companions]
        held = [HeldBatch(lock, batch), *companions]
        if companions:
            metrics.coalesced(len(companions))
        try:
            plans = plan_all(ctx, held, model_id)
        except BatchBusy:
            raise
        except Exception as exc:
            record_failures(ctx, held, exc)
            raise
        tokenised = tokenise_planned(ctx, plans)
        delivery = PlannedDelivery(ctx, lane, plans, tokenised, model_id, timer)
        outcome = ctx.mode.deliver(delivery)
        return outcome if outcome is not None else BatchOutcome(0, 0, written_behind=True)
    except BatchBusy:
        # Its worker is alive; if it dies, its lock goes with its connection and the
        # reconciler sends the batch again, once the grace has passed since this claim.
        _date_claim(lane.connection, job_id, batch_no, delivered=True, send_no=send_no)
        return BatchOutcome(0, 0, skipped_reason="batch is being processed by another worker")
    finally:
        if delivery is None or not delivery.handed_over:
            for each_lock in locks:
                each_lock.release()
            timer.finish()
            ctx.mode.release(lane)


def _wrong_model(held: HeldBatch, model_id: str) -> BatchOutcome:
    """Never embed with another model than the collection's: fail loudly, per item."""
    batch = held.batch
    reason = f"worker serves {model_id}, collection needs {batch.manifest_id}"
    failures = {i.external_id: reason for i in batch.items}
    held.lock.run(lambda conn: fail_all(conn, batch, failures))
    failed = BatchOutcome(0, len(batch.items))
    metrics.items_failed(failures, kind="wrong_model")
    metrics.batch_stored(failed)
    return failed


def _store_all(
    ctx: WorkerContext, lane: DbSession, prepared: list[EmbeddedBatch], timer: BatchTimer
) -> BatchOutcome:
    """Write each embedded batch in its own transaction, the delivery's own batch (first in
    prepared) last; returns its outcome, or raises its error once the others are written."""
    timer.take_over()
    own: BatchOutcome | None = None
    try:
        for each in [*prepared[1:], prepared[0]]:
            try:
                outcome = _store(ctx, lane, each)
            except Exception as exc:
                if each is prepared[0]:
                    raise
                # Its error is recorded on its items; the reconciler sends it again.
                log.warning(
                    "job %s batch %d (embedded with another batch): %s",
                    each.held.batch.job_id,
                    each.held.batch.batch_no,
                    exc,
                )
                continue
            if each is prepared[0]:
                own = outcome
    finally:
        timer.finish()
    assert own is not None
    return own


def _store(ctx: WorkerContext, lane: DbSession, prepared: EmbeddedBatch) -> BatchOutcome:
    """Write a batch and end it: committed, or its error recorded for the reconciler's re-send."""
    batch, lock = prepared.held.batch, prepared.held.lock
    what = f"writing job {batch.job_id} batch {batch.batch_no}"
    try:
        with (
            time_limit(ctx.settings.task_time_limit_s, what, backstop=False),
            metrics.stage("write"),
        ):
            # A chunking collection's documents replace all their chunks at once.
            write = write_document_batch if batch.chunking is not None else write_batch
            outcome = lock.run(
                lambda conn: write(
                    conn,
                    ctx.embedder,
                    batch,
                    prepared.candidates,
                    prepared.gave_up,
                    prepared.embedded,
                    prepared.model_id,
                )
            )
        metrics.batch_stored(outcome)
    except BatchBusy:
        _date_claim(lane.connection, str(batch.job_id), batch.batch_no, delivered=False)
        return BatchOutcome(0, 0, skipped_reason="batch is being processed by another worker")
    except Exception as exc:
        record_failures(ctx, [prepared.held], exc, probe_engine=False)
        raise
    finally:
        lock.release()
    log.info(
        "job %s batch %d: %d embedded, %d unchanged, %d superseded, %d failed",
        batch.job_id,
        batch.batch_no,
        outcome.done - outcome.unchanged - outcome.superseded,
        outcome.unchanged,
        outcome.superseded,
        outcome.failed,
    )
    return outcome


def _date_claim(
    connect: Callable[[], psycopg.Connection[Any]],
    job_id: str,
    batch_no: int,
    delivered: bool,
    send_no: int | None = None,
) -> None:
    try:
        date_claim(connect(), job_id, batch_no, delivered, send_no)
    except psycopg.Error as exc:
        # Best effort: without it the unclaimed-send backstop still re-sends the batch.
        log.warning("job %s batch %d: could not date a claim: %s", job_id, batch_no, exc)
