"""Shared resources for request handlers, built once in create_app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, Request
from sqlalchemy import Engine

from api.validation import JsonLimits
from embedq_core.settings import Settings


@dataclass
class ApiResources:
    """What handlers need: settings, the database engine, the queue client and a Redis client
    for queue depths."""

    settings: Settings
    engine: Engine
    celery: Celery
    redis: Any

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
