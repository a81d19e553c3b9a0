"""One step of a migration: embed the next chunk and move the checkpoint, in one transaction.

A step holds the migration's advisory lock while it works, so steps never overlap; a worker
killed mid-chunk rolls back its transaction, and the next step redoes at most that one chunk.
Phases: keyset (every row with text, by primary key) → catchup (rows whose new vector is NULL:
inserted behind the checkpoint, or whose text changed; bounded, see _after_pass) → index (a
worker's maintenance thread builds the HNSW index, migrations/reembed/index_build.py, while
steps keep embedding new rows) → following (keep new and changed rows embedded until
finalize). Rows without text (text_rule.py) are never read, so never embedded.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import psycopg
from psycopg.types.json import Jsonb

from embedq_core.catalog import Chunking
from embedq_core.settings import Settings
from migrations.reembed import attempts, chunk_io
from migrations.reembed.chunk_table import EncodedWindows
from migrations.reembed.progress import record_counts
from migrations.reembed.row_failures import RowFailureOptions
from migrations.reembed.state import Migration, MigrationNotFound, load, set_fields

log = logging.getLogger(__name__)

Outcome = Literal["chunk", "phase", "idle", "stopped", "busy", "stale", "retry", "failed"]


class VectorSource(Protocol):
    """What a step needs of the engine."""

    manifest_id: str

    def encode(self, texts: list[str]) -> chunk_io.Encoded:
        """Unit-length vectors of texts, in order (and their weights, for a sparse model)."""

    def encode_windows(self, texts: list[str], chunking: Chunking) -> EncodedWindows:
        """Each text cut into token windows, each window embedded (a chunking vectorizer)."""


@dataclass(frozen=True)
class StepResult:
    """What one step did and when the next should run (None: do not send one)."""

    outcome: Outcome
    phase: str
    rows_read: int = 0
    rows_written: int = 0
    next_delay_s: float | None = 0.0


@dataclass(frozen=True)
class StepOptions:
    """Settings a step needs: the idle wait in the following phase (a vectorizer's is
    shorter), the attempt budget and backoff, the bound on catch-up passes, and how refused
    rows are retried."""

    follow_interval_s: float
    vectorize_interval_s: float
    max_attempts: int
    retry_delay_s: float
    max_catchup_passes: int
    rows: RowFailureOptions

    @classmethod
    def from_settings(cls, settings: Settings) -> StepOptions:
        """The options the EMBEDQ_REEMBED_* settings describe."""
        return cls(
            follow_interval_s=settings.reembed_follow_interval_s,
            vectorize_interval_s=settings.vectorize_follow_interval_s,
            max_attempts=settings.reembed_max_step_attempts,
            retry_delay_s=settings.reembed_step_retry_delay_s,
            max_catchup_passes=settings.reembed_max_catchup_passes,
            rows=RowFailureOptions(
                max_attempts=settings.reembed_max_row_attempts,
                first_delay_s=settings.reembed_row_retry_delay_s,
            ),
        )


def run_step(
    conn: psycopg.Connection[Any],
    source: VectorSource,
    name: str,
    token: str,
    options: StepOptions,
) -> StepResult:
    """Advance migration `name` by one chunk or one phase change. A failing step is counted
    and retried with backoff; after options.max_attempts in a row the migration is `failed`."""
    # A session lock for the whole step; it dies with the connection, so a killed worker
    # never leaves the migration locked.
    if not attempts.try_lock(conn, "step_attempts", name):
        return StepResult("busy", "", next_delay_s=None)
    try:
        refused = _begin(conn, source, name, token, options)
        if refused is not None:
            return refused
        try:
            return _chunk(conn, source, name, token, options)
        except MigrationNotFound:
            raise
        except Exception as exc:
            if conn.closed or conn.broken:
                raise  # Postgres is gone: nothing can be recorded; the caller retries
            log.exception("re-embedding step of %s failed", name)
            failed, tried = attempts.record_failure(
                conn, name, "step_attempts", exc, options.max_attempts
            )
            if failed:
                return StepResult("failed", "", next_delay_s=None)
            return StepResult(
                "retry", "", next_delay_s=attempts.retry_delay_s(tried, options.retry_delay_s)
            )
    except MigrationNotFound:  # a vectorizer dropped meanwhile: its chain ends here
        return StepResult("stopped", "", next_delay_s=None)
    finally:
        if not conn.closed and not conn.broken:
            attempts.unlock(conn, "step_attempts", name)


def _refusal(
    conn: psycopg.Connection[Any], m: Migration, source: VectorSource, token: str
) -> StepResult | None:
    if m.step_token != token:
        return StepResult("stale", m.phase, next_delay_s=None)
    if m.status != "running":
        return StepResult("stopped", m.phase, next_delay_s=None)
    if m.manifest_id != source.manifest_id:
        set_fields(
            conn,
            m.name,
            status="failed",
            error=f"worker serves {source.manifest_id}, migration needs {m.manifest_id}",
        )
        return StepResult("stopped", m.phase, next_delay_s=None)
    return None


def _begin(
    conn: psycopg.Connection[Any],
    source: VectorSource,
    name: str,
    token: str,
    options: StepOptions,
) -> StepResult | None:
    # Its own transaction, committed before the work: a worker killed mid-chunk still
    # leaves the attempt counted.
    with conn.transaction():
        m = load(conn, name, lock=True)
        refused = _refusal(conn, m, source, token)
        if refused is None and not attempts.begin_attempt(
            conn, m, "step_attempts", options.max_attempts
        ):
            refused = StepResult("failed", m.phase, next_delay_s=None)
        return refused


def _chunk(
    conn: psycopg.Connection[Any],
    source: VectorSource,
    name: str,
    token: str,
    options: StepOptions,
) -> StepResult:
    with conn.transaction():
        # The row lock waits for an operator action in progress (pause, cutover) and makes
        # it wait for this chunk; other steps are already kept out by the session lock.
        m = load(conn, name, lock=True)
        refused = _refusal(conn, m, source, token)
        if refused is not None:
            return refused
        started = time.perf_counter()
        rows = chunk_io.next_rows(conn, m)
        fields: dict[str, Any] = {"step_attempts": 0}
        if m.step_attempts > 1:  # recovered from failed attempts: their error is over
            fields["error"] = None
        if rows:
            texts = [text for _, text in rows]
            encoded = (
                source.encode(texts)
                if m.chunking is None
                else source.encode_windows(texts, m.chunking)
            )
            written, _ = chunk_io.write_chunk(conn, m, rows, encoded, options.rows)
            chunk_io.log_chunk(conn, m, rows, written, time.perf_counter() - started)
            fields.update(
                checkpoint=Jsonb(chunk_io.json_key(rows[-1][0])),
                chunks_done=m.chunks_done + 1,
                rows_embedded=m.rows_embedded + written,
                pass_rows=m.pass_rows + len(rows),
            )
        else:
            written = 0
        if len(rows) == m.chunk_size:
            set_fields(conn, name, **fields)
            return StepResult("chunk", m.phase, len(rows), written)
        # Fewer rows than a chunk: the pass has reached the end of the key range.
        result = _after_pass(m, m.pass_rows + len(rows), fields, options)
        set_fields(conn, name, **fields)
        if result.phase != m.phase:
            record_counts(conn, m)  # status serves these until the next phase change
        return StepResult(result.outcome, result.phase, len(rows), written, result.next_delay_s)


def _after_pass(
    m: Migration, pass_rows: int, fields: dict[str, Any], options: StepOptions
) -> StepResult:
    """Where the migration goes at the end of a pass; updates `fields` to match."""
    fields.update(checkpoint=None, pass_rows=0)
    if m.phase == "keyset":
        fields.update(phase="catchup", catchup_passes=0)
        return StepResult("phase", "catchup")
    if m.phase == "catchup":
        # Steady inserts would keep every pass busy: stop once a pass finds less than a chunk,
        # or after the allowed passes. Later rows are embedded by the index and following
        # phases, which keep passing over pending rows.
        passes = m.catchup_passes + 1
        if pass_rows < m.chunk_size or passes >= options.max_catchup_passes:
            fields.update(phase="index", catchup_passes=passes)
            return StepResult("phase", "index")
        fields.update(catchup_passes=passes)
        return StepResult("phase", "catchup")
    # Index or following: a backlog of a chunk or more goes on at once; fewer rows mean the
    # pass has caught up, so wait, and let the next pass take what arrives meanwhile in one
    # chunk rather than one step per insert.
    if pass_rows < m.chunk_size:
        interval_s = options.vectorize_interval_s if m.is_vectorizer else options.follow_interval_s
        return StepResult("idle", m.phase, next_delay_s=interval_s)
    return StepResult("phase", m.phase)


def new_step_token(conn: psycopg.Connection[Any], name: str) -> str:
    """Make a fresh token the next step message must carry (older messages become stale)."""
    token = uuid.uuid4().hex
    set_fields(conn, name, step_token=token)
    return token


def step_is_current(conn: psycopg.Connection[Any], name: str, token: str) -> bool:
    """Whether a step message carrying `token` still leads a running migration's chain; a
    stale one (a newer chain was started) or one of a stopped migration just ends."""
    try:
        m = load(conn, name)
    except MigrationNotFound:
        return False
    return m.step_token == token and m.status == "running"
