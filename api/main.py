"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from api.auth import ApiKeyGate, require_api_key
from api.body_limit import BodyBudget, BodyLimit
from api.deps import ApiResources
from api.errors import ERROR_RESPONSES, VECTORIZER_RESPONSES, install_error_handlers
from api.fleet import QueryAdmission
from api.metrics import install_metrics
from api.openapi_limits import install_openapi_limits
from api.routes import (
    collections,
    embeddings,
    health,
    jobs,
    reembed,
    rerank,
    search,
    vectorizers,
)
from embedq_core.db import make_engine
from embedq_core.queueing import make_async_redis, make_celery, make_redis
from embedq_core.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """Build the app; connections open lazily, so startup never waits on the database."""
    resources = ApiResources(
        settings=settings,
        engine=make_engine(
            settings.require_database_url(),
            statement_timeout_s=settings.api_statement_timeout_s,
        ),
        celery=make_celery(settings),
        redis=make_redis(settings),
        live_redis=make_async_redis(settings),
        admission=QueryAdmission(settings.max_waiting_queries_per_model),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        resources.engine.dispose()
        resources.redis.close()
        await resources.live_redis.aclose()

    # /docs and /redoc load Swagger UI and ReDoc from a packaged copy served by the API itself,
    # not from a CDN, so they work on an intranet.
    app = FastAPIOffline(
        title="embedq",
        version="0.1.0",
        summary="Asynchronous batch embedding into Postgres/pgvector",
        lifespan=lifespan,
    )
    app.state.resources = resources
    app.include_router(health.router)
    protected = [Depends(require_api_key)]
    app.include_router(collections.router, dependencies=protected, responses=ERROR_RESPONSES)
    app.include_router(jobs.router, dependencies=protected, responses=ERROR_RESPONSES)
    app.include_router(reembed.router, dependencies=protected, responses=ERROR_RESPONSES)
    app.include_router(embeddings.router, dependencies=protected, responses=ERROR_RESPONSES)
    app.include_router(search.router, dependencies=protected, responses=ERROR_RESPONSES)
    app.include_router(rerank.router, dependencies=protected, responses=ERROR_RESPONSES)
    app.include_router(
        vectorizers.router,
        dependencies=protected,
        responses=VECTORIZER_RESPONSES,
    )

    install_error_handlers(app, settings)
    install_openapi_limits(app, settings)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_request_bytes,
        timeout_s=settings.request_body_timeout_s,
        budget=BodyBudget(settings.max_request_bytes_in_flight),
        retry_after_s=settings.retry_after_s,
    )
    if settings.auth_required:
        # Outside the body limit: a request without a valid key never has its body read.
        app.add_middleware(
            ApiKeyGate, engine=resources.engine, retry_after_s=settings.retry_after_s
        )
    # /metrics (bearer EMBEDQ_METRICS_TOKEN when set) and request counting, outermost: it
    # sees the body limit's answers too.
    install_metrics(app, resources)
    return app
