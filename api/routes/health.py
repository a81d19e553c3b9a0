"""Liveness and readiness (no API key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import text

from api.deps import Resources

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (async: answered on the event loop even when every worker thread
    is busy with slow requests)."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(resources: Resources, response: Response) -> dict[str, str]:
    """Postgres and the broker answer."""
    checks: dict[str, str] = {}
    try:
        with resources.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["postgres"] = "ok"
    except Exception as exc:  # any failure means not ready; say which
        checks["postgres"] = f"error: {type(exc).__name__}"
    try:
        with resources.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    if any(v != "ok" for v in checks.values()):
        response.status_code = 503
    return checks
