"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.exc import OperationalError

from api.auth import require_api_key
from api.deps import ApiResources
from api.fleet import FleetUnavailable, WorkerFailed
from api.metrics import EmbedqCollector
from api.routes import collections, embeddings, health, jobs, reembed, search
from embedq_core.db import make_engine
from embedq_core.queueing import make_celery, make_redis
from embedq_core.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """Build the app; connections open lazily, so startup never waits on the database."""
    resources = ApiResources(
        settings=settings,
        engine=make_engine(settings.require_database_url()),
        celery=make_celery(settings),
        redis=make_redis(settings),
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
    app.include_router(jobs.router, dependencies=protected)
    app.include_router(reembed.router, dependencies=protected)
    app.include_router(embeddings.router, dependencies=protected)
    app.include_router(search.router, dependencies=protected)

    registry = CollectorRegistry()
    registry.register(EmbedqCollector(resources))

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus exposition (no key: scrape it from inside the network)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.middleware("http")
    async def check_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """413 over the byte limit; 422 naming the body when it is not valid UTF-8."""
        if request.method not in {"POST", "PUT", "PATCH"}:
            return await call_next(request)
        limit = settings.max_request_bytes
        declared = request.headers.get("content-length", "")
        problem: tuple[int, str, str] | None = None
        if declared.isdigit() and int(declared) > limit:
            problem = (413, f"body over {limit} bytes", "too_large")
        else:
            body = await request.body()
            if len(body) > limit:
                problem = (413, f"body over {limit} bytes", "too_large")
            else:
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError as exc:
                    problem = (422, f"body is not valid UTF-8 (byte {exc.start})", "utf8_invalid")
        if problem is not None:
            status_code, msg, kind = problem
            detail = [{"loc": ["body"], "msg": msg, "type": kind}]
            return JSONResponse(status_code=status_code, content={"detail": detail})
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI echoes each bad input back; that fails on lone surrogates and would return
        # megabytes for an oversize text. Name the field and the reason, nothing more.
        detail = [
            {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.exception_handler(OperationalError)
    async def database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        # An outage, not a bad request: ask the client to retry instead of answering 500.
        log.warning("database unavailable: %s", exc.orig)
        return JSONResponse(
            status_code=503,
            content={"detail": "database unavailable; retry later"},
            headers={"Retry-After": str(settings.retry_after_s)},
        )

    @app.exception_handler(FleetUnavailable)
    async def fleet_unavailable(request: Request, exc: FleetUnavailable) -> JSONResponse:
        # No worker of the model answered: say which model, and when to try again.
        return JSONResponse(
            status_code=503,
            content={"detail": str(exc)},
            headers={"Retry-After": str(settings.retry_after_s)},
        )

    @app.exception_handler(WorkerFailed)
    async def worker_failed(request: Request, exc: WorkerFailed) -> JSONResponse:
        return JSONResponse(status_code=502, content={"detail": str(exc)})

    return app
