"""Shared resources for request handlers, built once in create_app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, Request
from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import Engine

from api.fleet import QueryAdmission
from api.validation import JsonLimits
from embedq_core.settings import Settings


@dataclass
class ApiResources:
    """What handlers need: settings, the database engine, the queue client, a Redis client for
    queue depths, and an event-loop Redis client and the admission limit for live queries."""

    settings: Settings
    engine: Engine
    celery: Celery
    redis: Any
    live_redis: AsyncRedis
    admission: QueryAdmission

    @property
    def json_limits(self) -> JsonLimits:
        """Limits on metadata and filters, from the settings."""
        return JsonLimits(
            self.settings.max_json_depth,
            self.settings.max_json_values,
            self.settings.max_json_key_chars,
        )


def get_resources(request: Request) -> ApiResources:
    """The resources stored on the app at startup."""
    resources: ApiResources = request.app.state.resources
    return resources


Resources = Annotated[ApiResources, Depends(get_resources)]
