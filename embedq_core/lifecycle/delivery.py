"""Each batch's delivery record (job_batches) and the rule that finds lost batches.

This module owns every transition of a batch's delivery, whoever makes it:

- created with its job, never sent (the API, in the job's transaction);
- sent: `sends` + 1 and `sent_at`, dated no later than the publish of the message (the API
  dates its first send at the job's creation; the reconciler dates a re-send at the start of
  the transaction that publishes it), so a claim of that message is always at or after it;
- waiting: sent, and not claimed since (its message is in the queue); a worker coalescing
  small batches may claim it before its message arrives (the message then finds nothing);
- claimed: `claimed_at`, `claimed_by`, in the worker's claim transaction (a batch whose
  `claimed_by` is set was tried before, and is never coalesced again); also `claimed_at`
  alone when a delivery found the batch locked by another live worker (its message is consumed:
  if that worker then fails, the grace rule sends the batch again);
- delivered: `delivered_at` and `delivered_send` (which send's message it was), with the claim,
  when the claim was made on delivery of the batch's own message (not by a worker coalescing it
  before its message arrived);
- finished: `finished_at`, in the transaction that leaves the batch without pending items.

A pending batch is lost, and sent again, when no live worker holds its advisory lock (the
caller checks) and either the broker was wiped, or it was never sent, or its last claim is at
or after its last send (the message was consumed, yet the batch is still pending: the worker
died, a delivery failed and Celery acked it, a hung worker was ended), once `grace_s` has passed
since the last of these events.

A worker killed after Redis handed it a message and before its claim was recorded leaves a send
that looks unclaimed. Redis serves each priority list of a queue in the order it was sent, so a
batch's first send by the API (all sent at the same priority, each job's batches in order) is
also lost once the message of a batch sent after it was delivered more than `grace_s` ago: the
later message left Redis after it, and no worker recorded taking it. "Sent after" is known from
Postgres's clock alone: a later batch of the same job, or a job created (so sent) after this
job's send was recorded (jobs.enqueued_at, stamped once the publish returned). A re-sent
message goes ahead of every first send (RESEND_PRIORITY) and behind earlier re-sends, so it is
lost too once, more than `grace_s` ago and after its send, a worker took a first send of its
model or a later re-send; the message says which send it is (SEND_NO_HEADER, recorded as
`delivered_send`), so a batch with several messages in flight proves nothing by an older one.
When nothing is delivered behind such a message (the last of an idle queue), a worker of its
model that held no task for more than `grace_s` after the send proves it gone: its consumer,
blocked on the queue, would have taken it (worker_presence, embedq_core/lifecycle/presence.py).
A message Redis takes back goes out of that order (a delivery that could not record its claim
through a Postgres outage is requeued behind the queue): its batch may be sent twice, which is
harmless.

Nothing here guesses what a queue holds; one backstop is presumed from age alone: a send that no
worker claimed within `unclaimed_s` (the visibility timeout) is taken as lost on its own
(evicted, or taken by a worker that died while every other worker of its model stayed busy and
nothing was delivered behind it), and costs a duplicate if it was not.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from embedq_core.queueing import FIRST_SEND_NO

# Jobs recorded by an API older than this table (a rolling upgrade) get their rows here, with
# what job_items says about claims; the same statement as the 0004 schema migration's backfill.
_ADOPT_UNRECORDED_SQL = """
INSERT INTO job_batches (job_id, batch_no, sends, sent_at, claimed_at)
SELECT i.job_id, i.batch_no, (j.enqueued_at IS NOT NULL)::int,
       least(j.enqueued_at, max(i.updated_at) FILTER (WHERE i.attempts > 0)),
       max(i.updated_at) FILTER (WHERE i.attempts > 0)
FROM jobs j JOIN job_items i ON i.job_id = j.id
WHERE j.finished_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM job_batches b WHERE b.job_id = j.id)
GROUP BY i.job_id, i.batch_no, j.enqueued_at
ON CONFLICT DO NOTHING
"""

# waiting: per model, the oldest first send by the API (dated at its job's creation) that no
# worker claimed. taken: first sends of that model whose own message reached a worker since then
# (a message sent after it is delivered after it was sent), more than the grace ago and within
# the backstop's window; per model the newest such send, per job its last such batch. The last
# clause: a re-sent batch (sent after its job's creation) whose message a delivery queued behind
# it proves gone: a first send's, or a later re-send's known to be its batch's last. Or a worker
# of its model sat idle, blocked on the queue, for more than the grace after the send.
_LOST_BATCHES_SQL = """
WITH waiting AS (
    SELECT j.manifest_id, min(b.sent_at) AS since
    FROM job_batches b JOIN jobs j ON j.id = b.job_id
    WHERE b.finished_at IS NULL AND j.finished_at IS NULL
      AND b.sends = 1 AND b.sent_at = j.created_at AND b.claimed_at IS NULL
    GROUP BY j.manifest_id
),
taken AS (
    SELECT w.manifest_id, t.job_id, t.batch_no, t.sent_at
    FROM waiting w CROSS JOIN LATERAL (
        SELECT b.job_id, b.batch_no, b.sent_at
        FROM job_batches b JOIN jobs j ON j.id = b.job_id
        WHERE b.delivered_at > greatest(w.since, now() - make_interval(secs => %(unclaimed_s)s))
          AND b.delivered_at < now() - make_interval(secs => %(grace_s)s)
          AND j.manifest_id = w.manifest_id AND b.sends = 1 AND b.sent_at = j.created_at
        OFFSET 0  -- kept a subquery: an index range per model, not a join over the whole hour
    ) t
),
taken_by_model AS (SELECT manifest_id, max(sent_at) AS sent_at FROM taken GROUP BY 1),
taken_by_job AS (SELECT job_id, max(batch_no) AS batch_no FROM taken GROUP BY 1)
SELECT b.job_id::text, j.manifest_id, b.batch_no
FROM job_batches b JOIN jobs j ON j.id = b.job_id
LEFT JOIN taken_by_model later_job ON later_job.manifest_id = j.manifest_id
LEFT JOIN taken_by_job later_batch ON later_batch.job_id = b.job_id
WHERE b.finished_at IS NULL AND j.finished_at IS NULL
  AND (%(broker_wiped)s
       OR ((b.sent_at IS NULL OR b.claimed_at >= b.sent_at)
           AND greatest(b.sent_at, b.claimed_at, j.created_at)
               < now() - make_interval(secs => %(grace_s)s))
       OR (b.sent_at < now() - make_interval(secs => %(unclaimed_s)s)
           AND (b.claimed_at IS NULL OR b.claimed_at < b.sent_at))
       OR (b.sends = 1 AND b.sent_at = j.created_at AND b.claimed_at IS NULL
           AND (later_job.sent_at > j.enqueued_at OR later_batch.batch_no > b.batch_no))
       OR (b.sent_at > j.created_at AND (b.claimed_at IS NULL OR b.claimed_at < b.sent_at)
           AND EXISTS (
               SELECT 1 FROM job_batches c JOIN jobs cj ON cj.id = c.job_id
               WHERE c.delivered_at > b.sent_at
                 AND c.delivered_at < now() - make_interval(secs => %(grace_s)s)
                 AND cj.manifest_id = j.manifest_id
                 AND (c.delivered_send = %(first_send_no)s
                      OR (c.delivered_send = c.sends AND c.sent_at > b.sent_at))))
       OR ((b.claimed_at IS NULL OR b.claimed_at < b.sent_at)
           AND EXISTS (
               SELECT 1 FROM worker_presence w
               WHERE w.manifest_id = j.manifest_id AND w.idle_since IS NOT NULL
                 AND w.beat_at > greatest(w.idle_since, b.sent_at, j.enqueued_at)
                                 + make_interval(secs => %(grace_s)s))))
  AND EXISTS (SELECT 1 FROM job_items i
              WHERE i.job_id = b.job_id AND i.batch_no = b.batch_no AND i.status = 'pending')
ORDER BY j.created_at, b.batch_no
"""


# The oldest waiting batches first (bounded), then each one's pending items counted only up to
# the bound: a large backlog of big batches costs no scan of its items.
_WAITING_SMALL_BATCHES_SQL = """
WITH waiting AS (
    SELECT b.job_id, b.batch_no, b.sent_at
    FROM job_batches b JOIN jobs j ON j.id = b.job_id
    WHERE j.manifest_id = %(manifest_id)s AND j.finished_at IS NULL AND b.finished_at IS NULL
      AND b.sent_at IS NOT NULL AND (b.claimed_at IS NULL OR b.claimed_at < b.sent_at)
      AND b.claimed_by IS NULL
      AND NOT (b.job_id = %(job_id)s AND b.batch_no = %(batch_no)s)
    ORDER BY b.sent_at, b.job_id, b.batch_no
    LIMIT %(limit)s
)
SELECT w.job_id::text, w.batch_no, p.pending
FROM waiting w
CROSS JOIN LATERAL (
    SELECT count(*)::int AS pending FROM (
        SELECT 1 FROM job_items i
        WHERE i.job_id = w.job_id AND i.batch_no = w.batch_no AND i.status = 'pending'
        LIMIT %(items_below)s) AS capped
) AS p
WHERE p.pending BETWEEN 1 AND %(items_below)s - 1
ORDER BY w.sent_at, w.job_id, w.batch_no
"""


@dataclass(frozen=True)
class WaitingBatch:
    """A small batch whose message waits in the queue (sent, not claimed since)."""

    job_id: str
    batch_no: int
    pending_items: int


def waiting_small_batches(
    conn: psycopg.Connection[Any],
    manifest_id: str,
    besides: tuple[str, int],
    items_below: int,
    limit: int,
) -> list[WaitingBatch]:
    """Those of the `limit` oldest-sent batches of the model's unfinished jobs, other than
    `besides` (job, batch), that wait in the queue with fewer than items_below pending items
    and were never claimed (a batch gets one try embedded beside others)."""
    rows = conn.execute(
        _WAITING_SMALL_BATCHES_SQL,
        {
            "manifest_id": manifest_id,
            "job_id": besides[0],
            "batch_no": besides[1],
            "items_below": items_below,
            "limit": limit,
        },
    ).fetchall()
    return [WaitingBatch(r[0], r[1], r[2]) for r in rows]


@dataclass(frozen=True)
class LostBatch:
    """A pending batch whose message is gone, by what Postgres knows."""

    job_id: str
    manifest_id: str
    batch_no: int


def record_created(conn: psycopg.Connection[Any], job_id: uuid.UUID, batches: int) -> None:
    """A new job's batches, not sent yet; in the transaction that records the job."""
    conn.execute(
        "INSERT INTO job_batches (job_id, batch_no) SELECT %s, n FROM generate_series(0, %s) n",
        (job_id, batches - 1),
    )


def record_enqueued(conn: psycopg.Connection[Any], job_id: uuid.UUID) -> None:
    """The API published every batch of a new job. The send is dated at the job's creation,
    which precedes the publish; a re-send already recorded keeps its own, later, date."""
    conn.execute(
        """
        UPDATE job_batches b SET sends = b.sends + 1, sent_at = coalesce(b.sent_at, j.created_at)
        FROM jobs j WHERE j.id = b.job_id AND b.job_id = %s
        """,
        (job_id,),
    )
    # Older reconcilers (a rolling upgrade) still read the job-level stamp.
    conn.execute("UPDATE jobs SET enqueued_at = now() WHERE id = %s", (job_id,))


def record_resent(
    conn: psycopg.Connection[Any], job_id: str, batch_nos: list[int]
) -> dict[int, int]:
    """The reconciler is publishing these batches again, in this transaction (whose start,
    now(), precedes the publish); returns each batch's send number, for its message."""
    rows = conn.execute(
        "UPDATE job_batches SET sends = sends + 1, sent_at = now()"
        " WHERE job_id = %s AND batch_no = ANY(%s) RETURNING batch_no, sends",
        (job_id, batch_nos),
    ).fetchall()
    conn.execute("UPDATE jobs SET enqueued_at = now() WHERE id = %s", (job_id,))
    return {int(batch_no): int(sends) for batch_no, sends in rows}


@dataclass(frozen=True)
class ClaimRecord:
    """What recording a claim tells the claimer."""

    # Seconds the batch waited since its last send (its queue wait; None: unknown).
    queued_s: float | None
    # Whether a worker had claimed the batch before (its earlier try did not finish it).
    claimed_before: bool


def record_claimed(
    conn: psycopg.Connection[Any],
    job_id: str,
    batch_no: int,
    worker: str,
    delivered: bool,
    send_no: int | None = None,
) -> ClaimRecord:
    """A worker took the batch's pending items, in its claim transaction; `delivered` when on
    delivery of the batch's own message (not coalescing it), whose send number is `send_no`
    (None: the message did not say). An upsert, so a job recorded by an older API gets its row
    here. The queue wait counts from the last send (a first send not recorded yet is dated at
    the job's creation, as record_enqueued will date it)."""
    row = conn.execute(
        """
        WITH prior AS (
            SELECT claimed_by FROM job_batches WHERE job_id = %(job)s AND batch_no = %(batch)s
        )
        INSERT INTO job_batches AS b
            (job_id, batch_no, claimed_at, claimed_by, delivered_at, delivered_send)
        VALUES (%(job)s, %(batch)s, now(), %(worker)s, CASE WHEN %(delivered)s THEN now() END,
                CASE WHEN %(delivered)s THEN %(send_no)s::int END)
        ON CONFLICT (job_id, batch_no)
        DO UPDATE SET claimed_at = now(), claimed_by = EXCLUDED.claimed_by,
                      delivered_at = coalesce(EXCLUDED.delivered_at, b.delivered_at),
                      delivered_send = CASE WHEN %(delivered)s THEN EXCLUDED.delivered_send
                                            ELSE b.delivered_send END
        RETURNING extract(epoch FROM b.claimed_at - coalesce(
            b.sent_at, (SELECT j.created_at FROM jobs j WHERE j.id = b.job_id)))::float8,
            coalesce((SELECT claimed_by IS NOT NULL FROM prior), false)
        """,
        {
            "job": job_id,
            "batch": batch_no,
            "worker": worker,
            "delivered": delivered,
            "send_no": send_no,
        },
    ).fetchone()
    if row is None:
        return ClaimRecord(None, False)
    return ClaimRecord(None if row[0] is None else max(float(row[0]), 0.0), bool(row[1]))


def date_claim(
    conn: psycopg.Connection[Any],
    job_id: str,
    batch_no: int,
    delivered: bool,
    send_no: int | None = None,
) -> None:
    """Date a claim that holds no lock on the batch: a delivery dropped because another live
    worker holds the batch, or one waiting for its worker's write lane (`delivered`: the
    batch's own message, send number `send_no`), or a write that found the batch taken over.
    Its message is consumed (or will be), so once no lock is held the grace rule re-sends the
    batch instead of waiting for the unclaimed-send backstop. The holder's `claimed_by` stays."""
    conn.execute(
        "UPDATE job_batches SET claimed_at = now(),"
        " delivered_at = CASE WHEN %(delivered)s THEN now() ELSE delivered_at END,"
        " delivered_send = CASE WHEN %(delivered)s THEN %(send_no)s::int ELSE delivered_send END"
        " WHERE job_id = %(job)s AND batch_no = %(batch)s AND finished_at IS NULL",
        {"job": job_id, "batch": batch_no, "delivered": delivered, "send_no": send_no},
    )


def record_finished(conn: psycopg.Connection[Any], job_id: uuid.UUID, batch_no: int) -> None:
    """Close the batch if none of its items is pending, in the transaction that finished them."""
    conn.execute(
        """
        UPDATE job_batches b SET finished_at = now()
        WHERE b.job_id = %(job)s AND b.batch_no = %(batch)s AND b.finished_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM job_items i WHERE i.job_id = %(job)s
                          AND i.batch_no = %(batch)s AND i.status = 'pending')
        """,
        {"job": job_id, "batch": batch_no},
    )


def adopt_unrecorded_jobs(conn: psycopg.Connection[Any]) -> int:
    """Give delivery records to unfinished jobs that have none (recorded by an older API)."""
    return conn.execute(_ADOPT_UNRECORDED_SQL).rowcount


def lost_batches(
    conn: psycopg.Connection[Any], grace_s: float, unclaimed_s: float, broker_wiped: bool
) -> list[LostBatch]:
    """Pending batches to send again, oldest job first, before checking their locks (see the
    module docstring for the rule)."""
    rows = conn.execute(
        _LOST_BATCHES_SQL,
        {
            "grace_s": grace_s,
            "unclaimed_s": unclaimed_s,
            "broker_wiped": broker_wiped,
            "first_send_no": FIRST_SEND_NO,
        },
    ).fetchall()
    return [LostBatch(r[0], r[1], r[2]) for r in rows]
