"""Submitting jobs and following them."""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter, HTTPException, status

from api.deps import Resources
from api.errors import error_content, field_error
from api.json_body import OffLoopJsonRoute
from api.schemas import CollectionName, ItemErrorOut, JobAccepted, JobIn, JobOut
from api.token_counter import count_tokens
from api.validation import check_json, check_text_chars
from embedq_core.catalog import Collection, get_collection
from embedq_core.lifecycle.jobs import NewItem, get_job, record_and_enqueue
from embedq_core.queueing import embed_queue, queue_depth

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["jobs"], route_class=OffLoopJsonRoute)


def _check_items(body: JobIn, resources: Resources) -> None:
    settings = resources.settings
    if len(body.items) > settings.max_items_per_job:
        raise field_error(
            413,
            ["items"],
            f"{len(body.items)} items; at most {settings.max_items_per_job} per job",
            "too_many",
        )
    seen: set[str] = set()
    for index, item in enumerate(body.items):
        check_text_chars(item.text, ["items", index, "text"], settings)
        if len(item.id) > settings.max_id_chars:
            raise field_error(
                422,
                ["items", index, "id"],
                f"id has {len(item.id)} characters; at most {settings.max_id_chars}",
                "too_long",
            )
        problem = check_json(item.metadata, resources.json_limits)
        if problem:
            raise field_error(422, ["items", index, "metadata"], problem, "json_invalid")
        if item.id in seen:
            raise field_error(
                422, ["items", index, "id"], f"duplicate id {item.id!r} in this batch", "duplicate"
            )
        seen.add(item.id)


def _check_strict(body: JobIn, collection: Collection, resources: Resources) -> None:
    texts = [i.text for i in body.items]
    counts = count_tokens(resources.engine, collection.manifest_id, texts, collection.max_length)
    for index, tokens in enumerate(counts):
        if tokens is None or tokens > collection.max_length:
            has = f"more than {collection.max_length}" if tokens is None else str(tokens)
            raise field_error(
                422,
                ["items", index, "text"],
                f"text has {has} tokens; the model's limit is {collection.max_length} "
                "(strict mode rejects instead of truncating)",
                "too_long",
            )


def _check_backpressure(collection: Collection, resources: Resources) -> None:
    queue = embed_queue(collection.manifest_id)
    try:
        depth = queue_depth(resources.redis, queue)
    except Exception as exc:  # broker down: Postgres still holds the job; accept it
        log.warning("could not read depth of %s: %s", queue, exc)
        return
    if depth >= resources.settings.max_queue_batches:
        msg = (
            f"queue {queue} holds {depth} batches (limit "
            f"{resources.settings.max_queue_batches}); retry later"
        )
        raise HTTPException(
            status_code=429,
            detail=error_content([], msg, "queue_full"),
            headers={"Retry-After": str(resources.settings.retry_after_s)},
        )


@router.post("/collections/{name}/jobs", status_code=status.HTTP_202_ACCEPTED)
def submit_job(name: CollectionName, body: JobIn, resources: Resources) -> JobAccepted:
    """Record the items in Postgres, then enqueue their batches; answers before any embedding.

    Once this answers 202 the job is durable: if enqueueing fails or Redis later loses the
    messages, the workers' reconciler enqueues the pending batches again.
    """
    _check_items(body, resources)
    with resources.engine.connect() as conn:
        collection = get_collection(conn, name)
    if collection is None:
        raise field_error(404, ["name"], f"unknown collection {name!r}", "not_found", "path")
    if body.strict and collection.chunking is None:  # a chunking collection cuts nothing off
        _check_strict(body, collection, resources)
    _check_backpressure(collection, resources)
    items = [NewItem(i.id, i.text, i.metadata) for i in body.items]
    settings = resources.settings
    job_id, batches = record_and_enqueue(
        resources.engine,
        resources.celery,
        collection,
        items,
        settings.items_per_task,
        settings.tokens_per_task,
    )
    return JobAccepted(job_id=job_id, status="queued", total=len(items), batches=batches)


@router.get("/jobs/{job_id}")
def read_job(job_id: uuid.UUID, resources: Resources) -> JobOut:
    """Status, counts and per-item errors of a job."""
    with resources.engine.connect() as conn:
        job = get_job(conn, job_id)
    if job is None:
        raise field_error(404, ["job_id"], f"unknown job {job_id}", "not_found", "path")
    return JobOut(
        job_id=job.job_id,
        collection=job.collection,
        manifest_id=job.manifest_id,
        status=job.status,
        total=job.total,
        done=job.done,
        failed=job.failed,
        truncated=job.truncated,
        unchanged=job.unchanged,
        chunks=job.chunks,
        errors=[ItemErrorOut(id=e.external_id, error=e.error) for e in job.errors],
    )
