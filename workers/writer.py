"""Writing vectors to pgvector: binary COPY into a staging table, then one upsert."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from embedq_core.staging import copy_to_stage

STAGE_TABLE = "embedq_stage"


def write_vectors(
    conn: psycopg.Connection[Any],
    vector_table: str,
    manifest_id: str,
    job_id: uuid.UUID,
    rows: Sequence[tuple[str, str, dict[str, Any], bytes, bool]],
    vectors: npt.NDArray[np.float32],
) -> int:
    """Upsert (external_id, text, metadata, content_hash, truncated) rows with their vectors,
    keyed by external id, in the caller's transaction. Returns rows written."""
    copy_to_stage(
        conn,
        STAGE_TABLE,
        [
            ("id", "text"),
            ("text", "text"),
            ("metadata", "jsonb"),
            ("embedding", "vector"),
            ("content_hash", "bytea"),
            ("truncated", "bool"),
        ],
        (
            (external_id, text, Jsonb(metadata), vector, digest, truncated)
            for (external_id, text, metadata, digest, truncated), vector in zip(
                rows, vectors, strict=True
            )
        ),
    )
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                """
                INSERT INTO {table} AS v (id, text, metadata, embedding, manifest_id,
                                          content_hash, truncated, job_id, updated_at)
                SELECT s.id, s.text, s.metadata, s.embedding, %s, s.content_hash, s.truncated,
                       %s, now()
                FROM {stage} s
                ON CONFLICT (id) DO UPDATE SET
                    text = EXCLUDED.text, metadata = EXCLUDED.metadata,
                    embedding = EXCLUDED.embedding, manifest_id = EXCLUDED.manifest_id,
                    content_hash = EXCLUDED.content_hash, truncated = EXCLUDED.truncated,
                    job_id = EXCLUDED.job_id, updated_at = now()
                """
            ).format(table=sql.Identifier(vector_table), stage=sql.Identifier(STAGE_TABLE)),
            (manifest_id, job_id),
        )
        return cur.rowcount
