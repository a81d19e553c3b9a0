"""Settings of the HTTP API and of live queries."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ApiSettings(BaseModel):
    """API: binding, auth, request limits, backpressure"""

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


class QuerySettings(BaseModel):
    """Live queries: /v1/embeddings and search, answered by the workers"""

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
