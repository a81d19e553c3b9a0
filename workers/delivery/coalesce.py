"""Small batches embedded together: one engine call for several waiting batches of one model.

A burst of small jobs (a few texts each) is one task per job; delivered one by one, each pays an
engine call of a few texts, which pads to its longest text and runs at about half the speed of
a full call (measured with the bundled MiniLM on 2 cores: 145-182 texts/s in calls of 10 texts,
321-343 in calls of 1,200). When a delivery's batch is small, the worker also claims other small
batches of the same model that wait in the queue (sent and not claimed since: batch_delivery),
each under its own advisory lock on the delivery's lane, up to a task's worth of items and
estimated tokens, and embeds all their texts in one call. Each batch is then written and
finished in its own transaction, as if delivered alone, and their own messages, when they
arrive, find nothing pending. A worker that dies meanwhile leaves each of them claimed after its
last send and unlocked: the reconciler sends them again by the usual grace rule.

Only batches never claimed before are grouped, and a group spends no attempt (job_state): if a
text in it kills the worker, every batch of the group is embedded alone from then on, and only
the poison one spends attempts until it fails.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from embedq_core.catalog import Chunking
from embedq_core.lifecycle.claims import ClaimedBatch, ClaimedItem, claim_batch
from embedq_core.lifecycle.delivery import waiting_small_batches
from embedq_core.task_batches import estimate_tokens
from workers.context import WorkerContext
from workers.delivery.db import DbSession, with_db_retry
from workers.delivery.isolation import (
    Embedded,
    TextEmbedder,
    embed_documents_isolating,
    embed_isolating,
)
from workers.delivery.lock import BatchBusy, BatchLock
from workers.engine import PreparedTexts

log = logging.getLogger(__name__)

# Candidates read per look: enough to fill a task with one-text batches several times over.
MAX_CANDIDATES = 512


@dataclass(frozen=True)
class HeldBatch:
    """A claimed batch and the lock this worker holds on it."""

    lock: BatchLock
    batch: ClaimedBatch


def claim_companions(ctx: WorkerContext, lane: DbSession, primary: ClaimedBatch) -> list[HeldBatch]:
    """Claim waiting small batches of primary's model to embed with it, when primary is small
    itself and on its first claim (a batch tried before is embedded alone, so that a poison
    text fails by itself); each is locked on lane. Best effort: a batch another worker takes
    first is skipped, and a database error ends the search (primary goes on alone or with what
    was claimed)."""
    settings = ctx.settings
    below = settings.coalesce_below_items
    if below == 0 or len(primary.items) >= below or primary.claimed_before or primary.chunking:
        return []  # (a document is an engine call's worth on its own)
    items = len(primary.items)
    tokens = sum(estimate_tokens(i.text) for i in primary.items)
    try:
        waiting = with_db_retry(
            settings,
            lambda: waiting_small_batches(
                lane.connection(),
                primary.manifest_id,
                (str(primary.job_id), primary.batch_no),
                below,
                MAX_CANDIDATES,
            ),
        )
    except Exception as exc:
        log.warning("looking for small batches to embed together failed: %s", exc)
        return []
    held: list[HeldBatch] = []
    for candidate in waiting:
        if items + candidate.pending_items > settings.items_per_task:
            continue
        lock = BatchLock(settings, lane, candidate.job_id, candidate.batch_no)
        try:
            batch = lock.run(
                partial(
                    claim_batch,
                    job_id=candidate.job_id,
                    batch_no=candidate.batch_no,
                    worker=ctx.worker_name,
                    delivered=False,
                )
            )
        except BatchBusy:
            continue  # another worker holds it: its own delivery or another coalescing worker
        except Exception as exc:
            lock.release()
            log.warning("claiming a small batch to embed together failed: %s", exc)
            break
        if batch is None or not batch.items:
            lock.release()
            continue
        held.append(HeldBatch(lock, batch))
        items += len(batch.items)
        tokens += sum(estimate_tokens(i.text) for i in batch.items)
        if items >= settings.items_per_task or tokens >= settings.tokens_per_task:
            break
    return held


def texts_together(to_embed: list[list[ClaimedItem]]) -> list[str]:
    """The texts of every batch's items in the order embed_together embeds them (to prepare
    them ahead)."""
    return [item.text for items in to_embed for item in items]


def embed_together(
    embedder: TextEmbedder,
    to_embed: list[list[ClaimedItem]],
    prepared: PreparedTexts | None = None,
    chunkings: Sequence[Chunking | None] | None = None,
) -> list[Embedded]:
    """Embed every batch's items in one call (of `prepared`, texts_together tokenised ahead,
    when given; one text that fails fails alone) and split the result back, one Embedded per
    batch keyed by external id (ids repeat across jobs). A batch of a chunking collection
    (`chunkings`, one per batch) has its documents cut into chunks and embedded by chunking's
    call instead."""
    kinds = list(chunkings) if chunkings is not None else [None] * len(to_embed)
    keyed = [
        (f"{index}\x00{item.external_id}", item.text)
        for index, items in enumerate(to_embed)
        if kinds[index] is None
        for item in items
    ]
    together = embed_isolating(embedder, keyed, prepared)
    for chunking in dict.fromkeys(k for k in kinds if k is not None):
        documents = [
            (f"{index}\x00{item.external_id}", item.text)
            for index, items in enumerate(to_embed)
            if kinds[index] == chunking
            for item in items
        ]
        together.update(embed_documents_isolating(embedder, documents, chunking))
    split = [Embedded() for _ in to_embed]
    for field in ("vectors", "errors", "sparse", "chunks"):
        for key, value in getattr(together, field).items():
            index, external_id = _unkey(key)
            getattr(split[index], field)[external_id] = value
    return split


def _unkey(key: str) -> tuple[int, str]:
    index, external_id = key.split("\x00", 1)
    return int(index), external_id
