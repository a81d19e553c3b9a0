"""Progress of re-embedding migrations, the same figures as `embedq reembed status`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import Resources
from api.errors import field_error
from api.json_body import OffLoopJsonRoute
from embedq_core.db import psycopg_connection
from migrations.reembed.progress import progress
from migrations.reembed.state import MigrationNotFound

router = APIRouter(prefix="/v1/reembed", tags=["re-embedding"], route_class=OffLoopJsonRoute)


@router.get("/{name}")
def read_migration(name: str, resources: Resources) -> dict[str, Any]:
    """Rows done and pending, rate, ETA, phase and index build progress."""
    with resources.engine.connect() as conn:
        try:
            return progress(psycopg_connection(conn), name).as_dict()
        except MigrationNotFound as exc:
            raise field_error(404, ["name"], str(exc), "not_found", "path") from exc
