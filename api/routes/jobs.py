"""Submitting jobs and following them."""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter, HTTPException, status

from api.deps import Resources
from api.errors import field_error
from api.schemas import ItemErrorOut, JobAccepted, JobIn, JobOut
from embedq_core.catalog import get_collection
from embedq_core.jobs import NewItem, create_job, enqueue_batches, get_job

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["jobs"])


@router.post("/collections/{name}/jobs", status_code=status.HTTP_202_ACCEPTED)
def submit_job(name: str, body: JobIn, resources: Resources) -> JobAccepted:
    """Record the items in Postgres, then enqueue their batches; answers before any embedding."""
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
        if item.id in seen:
            raise field_error(
                422, ["items", index, "id"], f"duplicate id {item.id!r} in this batch", "duplicate"
            )
        seen.add(item.id)
    with resources.engine.connect() as conn:
        collection = get_collection(conn, name)
    if collection is None:
        raise HTTPException(status_code=404, detail=f"unknown collection {name!r}")
    items = [NewItem(i.id, i.text, i.metadata) for i in body.items]
    job_id, batches = create_job(resources.engine, collection, items, settings.items_per_task)
    enqueue_batches(resources.celery, job_id, collection.manifest_id, list(range(batches)))
    return JobAccepted(job_id=job_id, status="queued", total=len(items), batches=batches)


@router.get("/jobs/{job_id}")
def read_job(job_id: uuid.UUID, resources: Resources) -> JobOut:
    """Status, counts and per-item errors of a job."""
    with resources.engine.connect() as conn:
        job = get_job(conn, job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"unknown job {job_id}")
    return JobOut(
        job_id=job.job_id,
        collection=job.collection,
        manifest_id=job.manifest_id,
        status=job.status,
        total=job.total,
        done=job.done,
        failed=job.failed,
        truncated=job.truncated,
        errors=[ItemErrorOut(id=e.external_id, error=e.error) for e in job.errors],
    )
