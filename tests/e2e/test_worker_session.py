"""The worker's database session and batch locks: a vanished worker host loses its session
(and its batch locks) within about a minute, not after the kernel's two-hour keepalive default;
a delivery dropped because another worker holds the batch is recorded as a claim."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import psycopg

from embedq_core.db import libpq_url
from embedq_core.lifecycle.claims import try_lock_batch
from embedq_core.lifecycle.delivery import lost_batches
from ops.devstack.stack import EmbeddedStack
from tests.support import PrivatePipeline
from workers.context import WorkerContext
from workers.delivery.run import process_batch
from workers.engine import Embedder


def test_worker_session_sets_tcp_keepalives(stack: EmbeddedStack) -> None:
    ctx = WorkerContext(stack.settings(), cast(Embedder, None))
    try:
        conn = ctx.connection()
        shown = {
            name: conn.execute(f"SHOW {name}").fetchone()
            for name in (
                "tcp_keepalives_idle",
                "tcp_keepalives_interval",
                "tcp_keepalives_count",
                "tcp_user_timeout",
                "client_connection_check_interval",
            )
        }
        assert conn.info.get_parameters()["keepalives_idle"] == "30"
        assert conn.info.get_parameters()["connect_timeout"] == "10"
        expected = {
            "tcp_keepalives_idle": ("30s",),
            "tcp_keepalives_interval": ("10s",),
            "tcp_keepalives_count": ("3",),
            "tcp_user_timeout": ("1min",),
            "client_connection_check_interval": ("2s",),
        }
        if conn.info.get_parameters().get("host", "").startswith("/"):
            # A Unix socket: the server ignores TCP keepalives and shows 0.
            expected |= {k: ("0",) for k in expected if k.startswith("tcp_")}
        assert shown == expected
    finally:
        ctx.close()


def test_a_busy_delivery_dates_a_claim_so_the_grace_rule_covers_it(
    private_pipeline: Callable[..., PrivatePipeline],
) -> None:
    pipeline = private_pipeline("busy")  # no worker of its own: the batch stays pending
    settings = pipeline.handle.settings
    response = pipeline.handle.submit("busy", [{"id": "b1", "text": "A busy sentence."}])
    job_id = response.json()["job_id"]
    url = libpq_url(settings.require_database_url())
    ctx = WorkerContext(settings, cast(Embedder, None))  # BatchBusy comes before any embedding
    with psycopg.connect(url, autocommit=True) as holder:
        assert try_lock_batch(holder, job_id, 0)  # "another live worker"
        outcome = process_batch(ctx, job_id, 0)
        assert outcome.skipped_reason == "batch is being processed by another worker"
        row = holder.execute(
            "SELECT claimed_at >= sent_at FROM job_batches WHERE job_id = %s AND batch_no = 0",
            (job_id,),
        ).fetchone()
        assert row == (True,)
        # Past the grace, with the backstop far off, the rule finds it (the reconciler then
        # re-sends it only once the holder's lock is gone).
        lost = lost_batches(holder, grace_s=0, unclaimed_s=3600, broker_wiped=False)
        assert (job_id, 0) in {(b.job_id, b.batch_no) for b in lost}
    ctx.close()
