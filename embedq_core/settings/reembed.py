"""Settings of re-embedding migrations and index builds."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ReembedSettings(BaseModel):
    """Re-embedding migrations and index builds"""

    reembed_chunk_size: int = Field(
        default=256, ge=1, le=100_000, description="rows per re-embedding step (one transaction)"
    )
    reembed_follow_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="after the backfill, how often new and changed rows are looked for",
    )
    # A vectorizer's writers wait for their vectors: its passes look more often (one index
    # probe of the pending rows each) than a migration's following phase.
    vectorize_follow_interval_s: float = Field(
        default=0.5,
        gt=0,
        description="how often a vectorizer looks for new and changed rows once it is caught up",
    )
    reembed_maintenance_work_mem: str = Field(
        default="512MB",
        pattern=r"^\d+\s*(kB|MB|GB)$",
        description="`maintenance_work_mem` for the HNSW build",
    )
    # A step (or index build) failing this many times in a row ends the migration `failed`.
    reembed_max_step_attempts: int = Field(
        default=5,
        ge=1,
        description=(
            "failed attempts in a row (of a step or of the index build) before a migration is "
            "`failed`"
        ),
    )
    # First retry delay of a failed step; it doubles per attempt, up to 60 s.
    reembed_step_retry_delay_s: float = Field(
        default=2.0,
        gt=0,
        description="first retry delay of a failed step, doubling per attempt up to 60 s",
    )
    # A row whose write the table refuses (its own trigger or constraint) is retried after
    # reembed_row_retry_delay_s, doubling up to an hour, and parked after this many attempts.
    reembed_max_row_attempts: int = Field(
        default=5,
        ge=1,
        description=(
            "failed writes of one row (refused by the table's own trigger or constraint) before "
            "it is parked with its error; other rows go on meanwhile"
        ),
    )
    reembed_row_retry_delay_s: float = Field(
        default=10.0,
        gt=0,
        description="first retry delay of a refused row, doubling per attempt up to an hour",
    )
    # Catch-up ends when a pass finds less than a chunk, or after this many passes; the
    # following phase embeds whatever arrives later.
    reembed_max_catchup_passes: int = Field(
        default=3,
        ge=1,
        description=(
            "catch-up ends after this many passes, or sooner when a pass finds less than a chunk"
        ),
    )
    # DDL on the user's table waits at most this long for its lock per attempt, so the
    # product's queries never queue behind it for longer; attempts repeat with backoff...
    reembed_lock_timeout_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description=(
            "DDL on the user's table waits at most this long for its lock per attempt, so the "
            "product's queries never wait longer behind it"
        ),
    )
    # ...until this much time has passed, then the command fails naming who holds the lock.
    reembed_lock_retry_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "DDL attempts repeat with backoff for this long, then the command fails naming who "
            "holds the lock"
        ),
    )
    # How often each worker's maintenance thread looks for an HNSW index to build.
    reembed_index_poll_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="how often each worker's maintenance thread looks for an HNSW index to build",
    )
    # A collection's HNSW index is built once its unfinished jobs hold fewer pending items than
    # this: after a bulk load, and under a steady stream of small jobs that never drains (few
    # items pending at any moment, where a bulk load holds many). Small, so the tail of a load
    # written with the index present (a graph search per row) stays short. With items still
    # pending the build waits one more maintenance pass (collection_index.due_now).
    index_pending_items_below: int = Field(
        default=256,
        ge=1,
        description=(
            "a collection's HNSW index is built once its unfinished jobs hold fewer pending items "
            "than this: at once when nothing is pending (after a bulk load), one maintenance pass "
            "later when a few are (a stream of small jobs that never drains)"
        ),
    )
