"""Settings of jobs and their deliveries: sizes, attempts, time limits, recovery."""

from __future__ import annotations

from pydantic import BaseModel, Field


class JobSettings(BaseModel):
    """Jobs: sizes, attempts, time limits and recovery"""

    # A task (one queued batch) holds at most items_per_task items and, past its first item, at
    # most tokens_per_task estimated tokens: many short texts sort together (less padding),
    # long passages make short tasks (embedq_core/task_batches.py).
    items_per_task: int = Field(
        default=1024, ge=1, le=10_000, description="most items per queued batch (task)"
    )
    tokens_per_task: int = Field(
        default=8192,
        ge=1,
        description=(
            "most estimated tokens per task past its first item (CJK character = 1, other "
            "characters 4 to a token); a job's texts are dealt into tasks shortest first, so each "
            "task pads little and short texts make big tasks, long passages short ones"
        ),
    )
    max_items_per_job: int = Field(default=2048, ge=1, description="larger submissions get 413")
    max_id_chars: int = Field(default=256, ge=1, description="longer ids get 422")
    # One text's characters, at most (job items, /v1/embeddings inputs, search queries): 422
    # above. A worker reads only what its model can (embedq_core/text_limits.py) of any text.
    max_text_chars: int = Field(
        default=1_000_000,
        ge=1,
        description=(
            "longer texts (a job item, an `/v1/embeddings` input, a search query) get 422; stated "
            "as `maxLength` in the OpenAPI document. A worker reads at most the model's "
            "`max_length` × 101 characters of any text (no WordPiece token covers more than 100), "
            "so an oversize text costs memory for what the model can read of it"
        ),
    )
    max_task_attempts: int = Field(
        default=5,
        ge=1,
        description=(
            "deliveries of a batch before its items are failed. An attempt is counted when the "
            "engine starts on the batch alone: a batch claimed ahead of one that kills the worker,"
            " or embedded together with other small batches on its first claim, spends none (after"
            " such a try it is embedded alone)"
        ),
    )
    # A delivery that fails, after which the engine cannot embed even a probe text, blames the
    # engine: the worker exits and gives the attempt back. At most this many times per batch
    # (job_batches.engine_refunds): a text that breaks every engine it meets then fails.
    max_engine_refunds: int = Field(
        default=3,
        ge=0,
        description=(
            "a delivery that fails, after which the engine cannot embed even a probe text, blames "
            "the engine: the worker exits and the attempt is given back, at most this many times "
            "per batch (`job_batches.engine_refunds`); after that the failure counts as the "
            "batch's own"
        ),
    )
    visibility_timeout_s: int = Field(
        default=3600,
        ge=10,
        description=(
            "Redis redelivery timeout; keep it above the longest batch. Also how long a send may "
            "go unclaimed before the reconciler presumes it lost"
        ),
    )
    # A batch running longer than this ends its worker process (the solo pool enforces no Celery
    # time limit), which frees the batch's lock so it is re-sent. Below visibility_timeout_s;
    # keep it above db_retry_timeout_s plus the longest batch, or a Postgres outage ends workers.
    task_time_limit_s: float = Field(
        default=900.0,
        gt=0,
        description=(
            "a batch still running after this ends its worker process (watchdog; the solo pool "
            "enforces no Celery time limit), so its lock is freed and it is re-sent; must be below"
            " the visibility timeout and above `EMBEDQ_DB_RETRY_TIMEOUT_S`"
        ),
    )
    # Reconciler: re-sends pending batches whose message is gone (consumed by a worker that
    # died or failed, never sent, or wiped with the broker), every reconcile_interval_s, once
    # requeue_grace_s has passed since the batch was last sent or claimed.
    reconcile_interval_s: float = Field(
        default=5.0,
        gt=0,
        description=(
            "how often the reconciler looks for lost batches (pending, with no live worker holding"
            " them) and sends them again"
        ),
    )
    requeue_grace_s: float = Field(
        default=10.0,
        ge=0,
        description=(
            "how long after a batch's last send or claim (or the delivery of a batch sent after "
            "it) it may count as lost: claimed yet pending with its lock free, never sent, or its "
            "message wiped with the broker"
        ),
    )
    # How long a worker keeps retrying a batch's transaction while Postgres is unreachable (or
    # answers with a deadlock or serialization failure).
    db_retry_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description=(
            "how long a worker retries a batch's transaction through connection loss, failover, "
            "deadlocks and serialization failures (no delivery attempt spent)"
        ),
    )
    # At start, how long the API, a worker and `embedq db upgrade` wait for what they need
    # (Postgres, the schema at head, the broker, the exported model) before they exit with its
    # name: services started all at once come up in any order.
    startup_wait_s: float = Field(
        default=300.0,
        gt=0,
        description=(
            "at start, how long the API, a worker and `embedq db upgrade` wait for Postgres (with "
            "the schema at head), the broker and the exported model, logging what they wait for, "
            "before they exit naming it: services started all at once (podman ignores compose's "
            "health conditions) come up in any order"
        ),
    )
