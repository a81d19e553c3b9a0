"""The query side of mining, embedded by the fleet: queries (with the model's instruction) and
positives given as text go, as jobs, into a collection of their own beside the corpus, on the
corpus's model. The vectors live in Postgres, so a rerun (after a crash, or with another range
or seed) embeds only what is missing, and the candidates are found in SQL beside them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from celery import Celery
from rich.progress import Progress, TaskID
from sqlalchemy import Engine, text

from embedq_core.catalog import Collection, create_collection
from embedq_core.lifecycle.jobs import NewItem, get_job, record_and_enqueue
from embedq_core.settings import Settings
from embedq_core.tables import FINISHED_STATUSES

# Jobs of one mining run in flight at once: the next is recorded while the fleet embeds one.
JOBS_IN_FLIGHT = 2
POLL_S = 0.5


class EmbeddingFailed(RuntimeError):
    """The fleet could not embed some query or positive; the message names them."""


def vectors_collection_name(collection: str, chosen: str | None) -> str:
    """The collection holding the query-side vectors: `<collection>_mine` unless named."""
    if chosen is not None:
        return chosen
    name = f"{collection}_mine"
    if len(name) > 48:
        raise ValueError(
            f"{name!r} is longer than a collection name may be (48): name one with "
            "--vectors-collection"
        )
    return name


def open_vectors_collection(engine: Engine, name: str, corpus: Collection) -> Collection:
    """Create (or reuse) the query-vectors collection on the corpus's model."""
    return create_collection(engine, name, corpus.manifest_id)


def _present(engine: Engine, table: str, ids: list[str]) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(f'SELECT id FROM "{table}" WHERE id = ANY(:ids)'), {"ids": ids}
        ).all()
    return {row.id for row in rows}


def _unfinished_jobs(engine: Engine, collection: str) -> list[uuid.UUID]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id FROM jobs WHERE collection = :c AND finished_at IS NULL"),
            {"c": collection},
        ).all()
    return [row.id for row in rows]


def _chunks(items: list[NewItem], size: int) -> Iterator[list[NewItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _JobWatch:
    """The jobs of one run and the items of each already counted on the progress bar."""

    def __init__(self, engine: Engine, progress: Progress, task: TaskID | None) -> None:
        self._engine = engine
        self._progress = progress
        self._task = task
        self._counted: dict[uuid.UUID, int] = {}

    def unfinished(self, job_ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """The jobs not finished yet; a job with failed items raises, naming them."""
        left = []
        with self._engine.connect() as conn:
            for job_id in job_ids:
                job = get_job(conn, job_id, max_errors=5)
                if job is None:
                    continue
                if job.failed:
                    named = "; ".join(f"{e.external_id}: {e.error}" for e in job.errors)
                    raise EmbeddingFailed(f"job {job_id}: {job.failed} item(s) failed: {named}")
                if self._task is not None:
                    self._progress.advance(self._task, job.done - self._counted.get(job_id, 0))
                self._counted[job_id] = job.done
                if job.status not in FINISHED_STATUSES:
                    left.append(job_id)
        return left

    def wait(self, job_ids: list[uuid.UUID], until_fewer_than: int = 1) -> list[uuid.UUID]:
        """Poll until fewer than `until_fewer_than` of the jobs are unfinished."""
        while True:
            left = self.unfinished(job_ids)
            if len(left) < until_fewer_than:
                return left
            time.sleep(POLL_S)


def embed_missing(
    engine: Engine,
    celery: Celery,
    settings: Settings,
    target: Collection,
    texts_by_id: dict[str, str],
    progress: Progress,
) -> int:
    """Embed every text whose id the collection lacks, as jobs of at most max_items_per_job
    items, at most JOBS_IN_FLIGHT at once; wait for jobs an interrupted run left first.
    Returns how many texts were embedded now."""
    leftover = _unfinished_jobs(engine, target.name)
    if leftover:
        progress.console.print(f"waiting for {len(leftover)} unfinished job(s) of {target.name}")
        _JobWatch(engine, progress, None).wait(leftover)
    ids = list(texts_by_id)
    present: set[str] = set()
    for start in range(0, len(ids), 10_000):
        present |= _present(engine, target.vector_table, ids[start : start + 10_000])
    missing = [NewItem(i, texts_by_id[i]) for i in ids if i not in present]
    if not missing:
        return 0
    watch = _JobWatch(
        engine, progress, progress.add_task(f"embedding into {target.name}", total=len(missing))
    )
    in_flight: list[uuid.UUID] = []
    for items in _chunks(missing, settings.max_items_per_job):
        in_flight = watch.wait(in_flight, until_fewer_than=JOBS_IN_FLIGHT)
        job_id, _ = record_and_enqueue(
            engine, celery, target, items, settings.items_per_task, settings.tokens_per_task
        )
        in_flight.append(job_id)
    watch.wait(in_flight)
    return len(missing)
