"""One typed settings object, built at each entry point and passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration for every embedq process. Environment variables use the EMBEDQ_ prefix;
    DATABASE_URL and REDIS_URL are also read without it. A variable set to the empty string
    counts as unset (compose passes `${EMBEDQ_X:-}` for every setting a `.env` may leave out)."""

    model_config = SettingsConfigDict(
        env_prefix="EMBEDQ_",
        env_file=None,
        extra="ignore",
        populate_by_name=True,
        env_ignore_empty=True,
    )

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("EMBEDQ_DATABASE_URL", "DATABASE_URL"),
        description="`postgresql://user:password@host:port/db` (also read as EMBEDQ_DATABASE_URL)",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("EMBEDQ_REDIS_URL", "REDIS_URL"),
        description="the broker, `redis://:password@host:port/db` (also read as EMBEDQ_REDIS_URL)",
    )

    # Worker: which exported model (directory holding embedq_manifest.json) it serves.
    model_dir: Path | None = Field(default=None, description="exported model a worker serves")
    runtime: Literal["auto", "onnxruntime-cpu", "onnxruntime-cuda", "openvino"] = Field(
        default="auto",
        description=(
            "`auto` (CUDA when present, else the fastest CPU runtime for the model), "
            "`onnxruntime-cpu`, `onnxruntime-cuda`, `openvino`"
        ),
    )
    intra_op_threads: int = Field(
        default=0, ge=0, description="runtime threads (0: runtime decides)"
    )
    # OpenVINO only: that many batches run at once, each on its share of the threads. Batches
    # stop waiting on each other's threads (a CPU shared with Postgres or the API stalls one
    # stream, not all), but a lone batch (a live query) gets only its share: slower alone.
    engine_streams: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "OpenVINO only (ONNX Runtime refuses anything else at start): batches run at once, "
            "each on its share of the threads. More than 1 keeps a core taken by Postgres or the "
            "API from stalling every engine thread, but a lone text (a one-text live query) runs "
            "on its share only (1.7× as long on 2 cores with 2 streams). For bulk-only workers on "
            "small shared machines"
        ),
    )
    # Also bounds how long a live query waits behind bulk work: one engine turn at most (a
    # batch per stream).
    max_batch_tokens: int = Field(
        default=1024,
        ge=16,
        description=(
            "padded-token budget of one inference batch; also bounds how long a live query can "
            "wait behind bulk work (one batch per stream)"
        ),
    )
    max_batch_size: int = Field(default=32, ge=1, description="most texts in one inference batch")
    # Write a batch's vectors on a second thread while the next batch is claimed and embedded
    # (its lock is held until the write commits; the message is acknowledged before that, and a
    # worker that dies meanwhile leaves a claimed, pending batch that the reconciler re-sends).
    write_behind: bool = Field(
        default=True,
        description=(
            "write a batch's vectors on a second thread while the next batch is claimed and "
            "embedded (`false`: one after the other)"
        ),
    )
    # With write_behind on, the engine also runs on its own thread: the consumer thread claims
    # the next batch (and acknowledges its message) while the engine embeds this one and the
    # writer writes the last, so the claim's round trips and Celery's acknowledge and fetch no
    # longer leave the engine idle. A third lane holds the batch claimed ahead; its lock is
    # held until its write commits, as for write_behind.
    claim_ahead: bool = Field(
        default=True,
        description=(
            "with write-behind on, the engine runs on a thread of its own: the consumer claims the"
            " next batch (and acknowledges its message) while the engine embeds this one and the "
            "writer writes the last, on three lanes (database sessions). `false`: the consumer "
            "claims the next batch once the engine is done with this one. Off with "
            "`EMBEDQ_WRITE_BEHIND=false`"
        ),
    )
    # Tokenise a batch on the consumer thread, so the engine call only runs the model (with
    # claim_ahead: while the engine runs the last batch). Unset: on where the engine runs on a
    # GPU, which would otherwise wait for the CPU's tokenising; off where it runs on the CPU,
    # whose cores the engine's threads already fill (on 2 cores tokenising ahead read a median
    # 0.85 of the bare engine against 0.88 in line, 7 A/B runs each: README "Figures").
    tokenise_ahead: bool | None = Field(
        default=None,
        description=(
            "`true`: the consumer tokenises a batch (and pads its engine batches) before handing "
            "it to the engine, so the engine call only runs the model, and with claim-ahead the "
            "next batch's tokenising overlaps the engine. Unset: on where the engine runs on a "
            "GPU, off on a CPU, whose cores the engine's threads already fill"
        ),
    )
    # A delivery whose batch has fewer pending items than this also claims other small batches
    # of the same model that wait in the queue, until the group holds items_per_task items or
    # tokens_per_task estimated tokens (the last batch taken may pass the token budget: its
    # texts are known once claimed), and embeds them all in one engine call (a burst of small
    # jobs: an engine call of a few texts pads and runs at about half the speed of a full one).
    # Each batch is still written and finished on its own. 0 turns it off.
    coalesce_below_items: int = Field(
        default=64,
        ge=0,
        description=(
            "a delivery whose batch has fewer pending items also claims other small batches of its"
            " model waiting in the queue, up to a task's items and tokens, and embeds them in one "
            "engine call; each is still written and finished on its own (`0`: off)"
        ),
    )

    # Jobs
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

    # Re-embedding migrations
    reembed_chunk_size: int = Field(
        default=256, ge=1, le=100_000, description="rows per re-embedding step (one transaction)"
    )
    reembed_follow_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="after the backfill, how often new and changed rows are looked for",
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

    # API
    api_host: str = Field(default="127.0.0.1", description="the address the API binds")
    api_port: int = Field(default=8000, description="the API's port")
    auth_required: bool = Field(default=True, description="API keys on every endpoint but health")
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="larger request bodies get 413"
    )
    request_body_timeout_s: float = Field(
        default=30.0, gt=0, description="408 when a request body has not arrived by then"
    )
    # Request bodies the API holds at once, across requests (each up to max_request_bytes);
    # past it a new body is answered 503 + Retry-After instead of being buffered.
    max_request_bytes_in_flight: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description=(
            "the request bodies the API holds at once, across requests; past it a new body gets "
            "503 + `Retry-After` (at least `EMBEDQ_MAX_REQUEST_BYTES`). Bodies over 64 KiB are "
            "parsed off the event loop"
        ),
    )
    # Metadata and search filters: limits checked without recursion before anything is stored.
    max_json_depth: int = Field(
        default=32,
        ge=1,
        le=1000,
        description="deepest nesting of one item's metadata or a search filter (422 beyond)",
    )
    max_json_values: int = Field(
        default=10_000,
        ge=1,
        description="most values in one item's metadata or a search filter (422 beyond)",
    )
    max_json_key_chars: int = Field(
        default=256,
        ge=1,
        description="longest key in one item's metadata or a search filter (422 beyond)",
    )
    max_queue_batches: int = Field(
        default=10_000,
        ge=1,
        description="backpressure: new jobs get 429 beyond this queue depth (batches)",
    )
    retry_after_s: int = Field(
        default=10, ge=1, description="the `Retry-After` of every 429 and 503"
    )
    # Every statement the API runs is cancelled after this (503 + Retry-After): a request
    # never holds a connection of the pool, or the product's database, for longer.
    api_statement_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "every SQL statement the API runs is cancelled after this (503 + `Retry-After`), so no"
            " request holds a pooled connection, or locks in the product's database, for longer"
        ),
    )

    # Query side: live embeddings (/v1/embeddings, search) answered by the workers.
    max_inputs_per_request: int = Field(
        default=2048, ge=1, description="texts per `/v1/embeddings` call (413 beyond)"
    )
    # Live requests (embeddings, searches) waiting for one model's workers in an API process;
    # past it, 429 + Retry-After at once instead of a longer wait.
    max_waiting_queries_per_model: int = Field(
        default=256,
        ge=1,
        description=(
            "live requests (`/v1/embeddings`, searches) waiting for one model's workers in an API "
            "process; past it, 429 + `Retry-After` at once. The waits are awaited on the event "
            "loop and hold no thread"
        ),
    )
    query_pickup_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="live queries: 503 when no worker of the model takes one by then",
    )
    query_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="live queries: 503 when a taken query is not answered by then",
    )
    search_ef_search: int = Field(
        default=100,
        ge=1,
        le=1000,
        description=(
            "`hnsw.ef_search` of `/search` unless the request sets `ef_search` (raised to `k` when"
            " smaller)"
        ),
    )

    # Metrics (Prometheus). Each worker process serves its own listener (0: none; in compose
    # every worker container uses 9200); the API serves /metrics on its own port. With a token
    # set, /metrics answers only `Authorization: Bearer <token>` (workers' /healthz stays open).
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description=(
            "a worker's metrics listener (`/metrics`, and `/healthz`: 200 once consuming); 0: "
            "none. One port per worker process"
        ),
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1", description="the address a worker's metrics listener binds"
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description=(
            "when set, every `/metrics` (API and workers) answers only `Authorization: Bearer "
            "<token>`"
        ),
    )
    # The API's gauges that read Postgres and Redis (unfinished jobs, queue depths, migration
    # progress) are refreshed at most this often, whatever the number of scrapes.
    metrics_cache_s: float = Field(
        default=5.0,
        ge=0,
        description=(
            "the API reads its Postgres/Redis figures (unfinished jobs, queue depths, migrations) "
            "at most this often, however many scrapes"
        ),
    )

    # `embedq db upgrade`, run as a role that may create roles, also creates (or updates) this
    # login role for the API and workers: no superuser, no CREATEROLE, no DDL on the schema's
    # own tables; unset, no role is touched.
    app_db_role: str | None = Field(
        default=None,
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description=(
            "the login role `embedq db upgrade` creates (or updates) for the API and workers: no "
            "superuser, no CREATEROLE, no DDL on the schema's own tables; unset, no role is "
            "touched"
        ),
    )
    app_db_password: SecretStr | None = Field(default=None, description="that role's password")

    # Embedded dev stack (used when DATABASE_URL / REDIS_URL are not given)
    data_dir: Path = Field(
        default=Path(".embedq"),
        description=(
            "where `embedq demo` keeps its embedded Postgres and Valkey data and the bundled "
            "model's export"
        ),
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="log level of every process"
    )

    @model_validator(mode="after")
    def _one_body_fits_the_budget(self) -> Settings:
        if self.max_request_bytes_in_flight < self.max_request_bytes:
            raise ValueError(
                f"max_request_bytes_in_flight ({self.max_request_bytes_in_flight}) must be at "
                f"least max_request_bytes ({self.max_request_bytes})"
            )
        return self

    @model_validator(mode="after")
    def _time_limit_between_retry_and_visibility(self) -> Settings:
        # Redis would hand a batch to a second worker while the first still runs it.
        if self.task_time_limit_s >= self.visibility_timeout_s:
            raise ValueError(
                f"task_time_limit_s ({self.task_time_limit_s}) must be below "
                f"visibility_timeout_s ({self.visibility_timeout_s})"
            )
        # A worker waiting out a Postgres outage would be ended by its own watchdog.
        if self.task_time_limit_s <= self.db_retry_timeout_s:
            raise ValueError(
                f"task_time_limit_s ({self.task_time_limit_s}) must be above "
                f"db_retry_timeout_s ({self.db_retry_timeout_s}), or a worker waiting out a "
                "Postgres outage is ended by its own watchdog"
            )
        return self

    def require_database_url(self) -> str:
        """The database URL, or a clear error naming the variable to set."""
        if not self.database_url:
            raise RuntimeError(
                "DATABASE_URL is not set (embedq demo --keep-running starts an embedded stack)"
            )
        return self.database_url

    def require_redis_url(self) -> str:
        """The broker URL, or a clear error naming the variable to set."""
        if not self.redis_url:
            raise RuntimeError(
                "REDIS_URL is not set (embedq demo --keep-running starts an embedded stack)"
            )
        return self.redis_url
