"""Table definitions shared by Alembic, the API and the workers."""

from __future__ import annotations

import re

from pgvector.sqlalchemy import SPARSEVEC, Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Sequence,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from embedq_core.sparse_vectors import SPARSE_COLUMN

metadata = MetaData()

JOB_STATUSES = ("queued", "running", "completed", "completed_with_errors", "failed")
FINISHED_STATUSES = frozenset(JOB_STATUSES[2:])  # a job in one of these has no work left
ITEM_STATUSES = ("pending", "done", "failed")
# 40 characters at most: the HNSW index name, vectors_<name>_embedding_hnsw, must fit in
# Postgres's 63-byte identifiers.
COLLECTION_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
COLLECTION_NAME_RE = re.compile(COLLECTION_NAME_PATTERN)

model_manifests = Table(
    "model_manifests",
    metadata,
    Column("id", Text, primary_key=True),
    Column("dimension", Integer, nullable=False),
    Column("pooling", Text, nullable=False),
    Column("manifest", JSONB, nullable=False),
    # The model's tokenizer.json, so the API can count tokens (strict mode) without the model.
    Column("tokenizer_json", Text),
    Column("registered_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

collections = Table(
    "collections",
    metadata,
    Column("name", Text, primary_key=True),
    Column("manifest_id", Text, ForeignKey("model_manifests.id"), nullable=False),
    Column("dimension", Integer, nullable=False),
    Column("vector_table", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # A chunking collection stores each document as token windows of the model's tokens
    # (both NULL: one row per item, as always).
    Column("chunk_max_tokens", Integer),
    Column("chunk_overlap_tokens", Integer),
    CheckConstraint("name ~ '^[a-z][a-z0-9_]{0,47}$'", name="collection_name_format"),
    CheckConstraint(
        "(chunk_max_tokens IS NULL) = (chunk_overlap_tokens IS NULL) AND"
        " (chunk_max_tokens IS NULL OR"
        " (chunk_max_tokens > 0 AND chunk_overlap_tokens >= 0"
        " AND chunk_overlap_tokens < chunk_max_tokens))",
        name="collection_chunking_valid",
    ),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("collection", Text, ForeignKey("collections.name"), nullable=False),
    Column("manifest_id", Text, ForeignKey("model_manifests.id"), nullable=False),
    Column("status", Text, nullable=False, server_default="queued"),
    Column("total", Integer, nullable=False),
    Column("done", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    # Chunks written for the job's documents (a chunking collection's; 0 otherwise).
    Column("chunks", Integer, nullable=False, server_default="0"),
    Column("batches", Integer, nullable=False),
    Column("enqueued_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    CheckConstraint(f"status IN {JOB_STATUSES}", name="job_status_known"),
)
Index("jobs_unfinished", jobs.c.updated_at, postgresql_where=jobs.c.finished_at.is_(None))

job_items = Table(
    "job_items",
    metadata,
    Column("job_id", UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("item_index", Integer, nullable=False),
    Column("batch_no", Integer, nullable=False),
    Column("external_id", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("metadata", JSONB, nullable=False, server_default="{}"),
    Column("content_hash", LargeBinary, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("truncated", Boolean, nullable=False, server_default="false"),
    # A chunking collection's document: the chunks written for it.
    Column("chunks", Integer),
    # Done without embedding: same text (content hash) and model as the stored vector.
    Column("unchanged", Boolean, nullable=False, server_default="false"),
    Column("error", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Submission order across all jobs: a vector row is only replaced by an item with a seq at
    # least as high, so a late redelivery of an older submission never overwrites a newer one.
    # NULL only on items finished before the column existed (they are never written again).
    Column("seq", BigInteger, server_default=text("nextval('job_item_seq')")),
    PrimaryKeyConstraint("job_id", "item_index"),
    UniqueConstraint("job_id", "external_id", name="job_items_external_id_unique"),
    CheckConstraint(f"status IN {ITEM_STATUSES}", name="item_status_known"),
)
Index("job_items_batch", job_items.c.job_id, job_items.c.batch_no)
job_item_seq = Sequence("job_item_seq", metadata=metadata, data_type=BigInteger)

# What was sent when and claimed when, per batch: the reconciler re-sends from these facts
# alone (embedq_core/lifecycle/delivery.py owns every transition).
job_batches = Table(
    "job_batches",
    metadata,
    Column("job_id", UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("batch_no", Integer, nullable=False),
    Column("sends", Integer, nullable=False, server_default="0"),
    # Never later than the publish of the batch's last message, so any claim of that message
    # is at or after it.
    Column("sent_at", DateTime(timezone=True)),
    Column("claimed_at", DateTime(timezone=True)),
    Column("claimed_by", Text),
    # When the batch's own message last reached a worker (claims by coalescing leave it):
    # every message sent before it in that queue had left Redis by then.
    Column("delivered_at", DateTime(timezone=True)),
    # Which send's message that was (embedq_core/queueing.SEND_NO_HEADER; NULL: not told).
    Column("delivered_send", Integer),
    # Set in the transaction that leaves the batch with no pending item.
    Column("finished_at", DateTime(timezone=True)),
    # Deliveries whose attempt was given back because the engine then failed a probe text too
    # (at most max_engine_refunds; workers/delivery/embed.py).
    Column("engine_refunds", Integer, nullable=False, server_default="0"),
    PrimaryKeyConstraint("job_id", "batch_no"),
)
Index(
    "job_batches_unfinished",
    job_batches.c.job_id,
    postgresql_where=job_batches.c.finished_at.is_(None),
)
Index(
    "job_batches_delivered",
    job_batches.c.delivered_at,
    postgresql_where=job_batches.c.delivered_at.isnot(None),
)

# Each worker's model and since when its consumer has held no task (schema 0012;
# embedq_core/lifecycle/presence.py).
worker_presence = Table(
    "worker_presence",
    metadata,
    Column("worker", Text, primary_key=True),
    Column("manifest_id", Text, nullable=False),
    Column("beat_at", DateTime(timezone=True), nullable=False),
    Column("idle_since", DateTime(timezone=True)),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("key_sha256", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
    # May manage vectorizers over HTTP (DDL on users' tables); other keys get 403 there.
    Column("admin", Boolean, nullable=False, server_default="false"),
)


REEMBED_STATUSES = ("planned", "running", "paused", "failed", "finalized")
REEMBED_PHASES = ("keyset", "catchup", "index", "following")
REEMBED_KINDS = ("migration", "vectorizer")

reembed_migrations = Table(
    "reembed_migrations",
    metadata,
    Column("name", Text, primary_key=True),
    Column("table_schema", Text, nullable=False),
    Column("table_name", Text, nullable=False),
    Column("id_column", Text, nullable=False),
    Column("id_type", Text, nullable=False),
    Column("text_column", Text, nullable=False),
    Column("legacy_column", Text, nullable=False),
    Column("new_column", Text, nullable=False),
    Column("manifest_id", Text, ForeignKey("model_manifests.id"), nullable=False),
    Column("dimension", Integer, nullable=False),
    Column("chunk_size", Integer, nullable=False),
    Column("status", Text, nullable=False, server_default="planned"),
    Column("phase", Text, nullable=False, server_default="keyset"),
    Column("checkpoint", JSONB),
    Column("cut_over", Boolean, nullable=False, server_default="false"),
    Column("rows_total", Integer, nullable=False, server_default="0"),
    Column("rows_embedded", Integer, nullable=False, server_default="0"),
    Column("chunks_done", Integer, nullable=False, server_default="0"),
    # The one step message that may proceed; re-sending a step replaces it, so a duplicate
    # chain dies at its next step instead of running beside the live one.
    Column("step_token", Text),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Consecutive failed attempts; at EMBEDQ_REEMBED_MAX_STEP_ATTEMPTS the migration fails.
    Column("step_attempts", Integer, nullable=False, server_default="0"),
    Column("index_attempts", Integer, nullable=False, server_default="0"),
    # Catch-up passes done, and rows found in the current pass (bounds the catch-up phase).
    Column("catchup_passes", Integer, nullable=False, server_default="0"),
    Column("pass_rows", Integer, nullable=False, server_default="0"),
    # Rows without text, counted with rows_total at start and at each phase change (NULL:
    # estimated, too large to count); status serves these instead of scanning the table.
    Column("rows_no_text", Integer),
    Column("counted_at", DateTime(timezone=True)),
    # A migration moves a table to a new model and is finalized; a vectorizer follows the
    # table for good. The text is one column, or a template over text_columns.
    Column("kind", Text, nullable=False, server_default="migration"),
    Column("text_columns", ARRAY(Text)),
    Column("text_template", Text),
    # A migration that changes a vectorizer's model names it (schema 0010).
    Column(
        "vectorizer",
        Text,
        ForeignKey(
            "reembed_migrations.name",
            ondelete="SET NULL",
            name="reembed_migrations_vectorizer_fkey",
        ),
    ),
    # A model with a sparse head: the sparsevec dimension of `<vector>_sparse` (schema 0010).
    Column("sparse_dimension", Integer),
    # A vectorizer cutting each row's text into token windows, stored in a table of their own
    # (schema 0011); NULL: one vector per row.
    Column("chunk_max_tokens", Integer),
    Column("chunk_overlap_tokens", Integer),
    CheckConstraint(f"status IN {REEMBED_STATUSES}", name="reembed_status_known"),
    CheckConstraint(f"phase IN {REEMBED_PHASES}", name="reembed_phase_known"),
    CheckConstraint(f"kind IN {REEMBED_KINDS}", name="reembed_kind_known"),
)

# Rows whose write failed (the table's own trigger or constraint refused it): retried after
# retry_at, parked after EMBEDQ_REEMBED_MAX_ROW_ATTEMPTS; a new text (text_md5) starts afresh.
reembed_row_failures = Table(
    "reembed_row_failures",
    metadata,
    Column(
        "migration",
        Text,
        ForeignKey("reembed_migrations.name", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("row_key", JSONB, nullable=False),
    Column("text_md5", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("error", Text, nullable=False),
    Column("parked", Boolean, nullable=False, server_default="false"),
    Column("retry_at", DateTime(timezone=True), nullable=False),
    Column("first_failed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_failed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("migration", "row_key"),
)

reembed_chunks = Table(
    "reembed_chunks",
    metadata,
    Column(
        "migration",
        Text,
        ForeignKey("reembed_migrations.name", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("chunk_no", Integer, nullable=False),
    Column("phase", Text, nullable=False),
    Column("first_id", JSONB),
    Column("last_id", JSONB),
    Column("rows_read", Integer, nullable=False),
    Column("rows_written", Integer, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("migration", "chunk_no"),
)


def vector_table_name(collection: str) -> str:
    """The table holding one collection's vectors; the name is validated, never interpolated raw."""
    if not COLLECTION_NAME_RE.match(collection):
        raise ValueError(f"collection name {collection!r} must match {COLLECTION_NAME_RE.pattern}")
    return f"vectors_{collection}"


def vector_table(
    collection: str, dimension: int, sparse_dimension: int | None = None, chunked: bool = False
) -> Table:
    """The vectors table of one collection: one row per external id, the model's dimension;
    with a sparse model also its lexical weights (sparsevec of the vocabulary's size). A
    chunking collection's table holds one row per chunk of a document, keyed by (id, chunk_no),
    with the chunk's character span in the document; every chunk of a document carries its
    metadata, content hash and submission."""
    sparse = (
        [Column(SPARSE_COLUMN, SPARSEVEC(sparse_dimension))] if sparse_dimension is not None else []
    )
    chunk_columns = (
        [
            Column("chunk_no", Integer, primary_key=True),  # with id: the key (id, chunk_no)
            Column("span_start", Integer, nullable=False),
            Column("span_end", Integer, nullable=False),
        ]
        if chunked
        else []
    )
    table = Table(
        vector_table_name(collection),
        MetaData(),
        Column("id", Text, primary_key=True),
        *chunk_columns,
        Column("text", Text, nullable=False),
        Column("metadata", JSONB, nullable=False, server_default="{}"),
        Column("embedding", Vector(dimension), nullable=False),
        Column("manifest_id", Text, ForeignKey(model_manifests.c.id), nullable=False),
        Column("content_hash", LargeBinary, nullable=False),
        Column("truncated", Boolean, nullable=False, server_default="false"),
        Column("job_id", UUID(as_uuid=True)),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        # The submission (job_items.seq) the row holds; only a newer or equal one replaces it.
        # Rows written by anything else count as the oldest.
        Column("seq", BigInteger, nullable=False, server_default="0"),
        *sparse,
    )
    # Vectors are L2-normalised, so inner product ranks exactly as cosine and is cheaper.
    Index(
        f"{table.name}_embedding_hnsw",
        table.c.embedding,
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_ip_ops"},
    )
    if sparse:  # lexical scores are inner products of the weights (FlagEmbedding's)
        Index(
            f"{table.name}_sparse_hnsw",
            table.c[SPARSE_COLUMN],
            postgresql_using="hnsw",
            postgresql_ops={SPARSE_COLUMN: "sparsevec_ip_ops"},
        )
    return table
