"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.deps import ApiResources
from api.routes import collections, health, jobs
from embedq_core.db import make_engine
from embedq_core.queueing import make_celery
from embedq_core.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """Build the app; connections open lazily, so startup never waits on the database."""
    resources = ApiResources(
        settings=settings,
        engine=make_engine(settings.require_database_url()),
        celery=make_celery(settings),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        resources.engine.dispose()

    app = FastAPI(
        title="embedq",
        version="0.1.0",
        summary="Asynchronous batch embedding into Postgres/pgvector",
        lifespan=lifespan,
    )
    app.state.resources = resources
    app.include_router(health.router)
    app.include_router(collections.router)
    app.include_router(jobs.router)
    return app
