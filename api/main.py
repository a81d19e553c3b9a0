"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import redis
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from api.auth import require_api_key
from api.deps import ApiResources
from api.routes import collections, health, jobs
from embedq_core.db import make_engine
from embedq_core.queueing import make_celery
from embedq_core.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """Build the app; connections open lazily, so startup never waits on the database."""
    resources = ApiResources(
        settings=settings,
        engine=make_engine(settings.require_database_url()),
        celery=make_celery(settings),
        redis=redis.Redis.from_url(
            settings.require_redis_url(), socket_timeout=2, socket_connect_timeout=2
        ),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        resources.engine.dispose()
        resources.redis.close()

    app = FastAPI(
        title="embedq",
        version="0.1.0",
        summary="Asynchronous batch embedding into Postgres/pgvector",
        lifespan=lifespan,
    )
    app.state.resources = resources
    app.include_router(health.router)
    protected = [Depends(require_api_key)]
    app.include_router(collections.router, dependencies=protected)
    app.include_router(jobs.router)

    @app.middleware("http")
    async def limit_body_size(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        limit = settings.max_request_bytes
        declared = request.headers.get("content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > limit
        if not too_big and declared is None and request.method in {"POST", "PUT", "PATCH"}:
            too_big = len(await request.body()) > limit
        if too_big:
            detail = [{"loc": ["body"], "msg": f"body over {limit} bytes", "type": "too_large"}]
            return JSONResponse(status_code=413, content={"detail": detail})
        return await call_next(request)

    @app.exception_handler(OperationalError)
    async def database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        # An outage, not a bad request: ask the client to retry instead of answering 500.
        log.warning("database unavailable: %s", exc.orig)
        return JSONResponse(
            status_code=503,
            content={"detail": "database unavailable; retry later"},
            headers={"Retry-After": str(settings.retry_after_s)},
        )

    return app
