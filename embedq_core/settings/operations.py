"""Settings of connections, metrics, database roles and logging."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr


class ConnectionSettings(BaseModel):
    """Connections"""

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("EMBEDQ_DATABASE_URL", "DATABASE_URL"),
        description="`postgresql://user:password@host:port/db` (also read as EMBEDQ_DATABASE_URL)",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("EMBEDQ_REDIS_URL", "REDIS_URL"),
        description="the broker, `redis://:password@host:port/db` (also read as EMBEDQ_REDIS_URL)",
    )


class OperationsSettings(BaseModel):
    """Metrics, database roles, the embedded dev stack, logging"""

    # Metrics (Prometheus). Each worker process serves its own listener (0: none; in compose
    # every worker container uses 9200); the API serves /metrics on its own port. With a token
    # set, /metrics answers only `Authorization: Bearer <token>` (workers' /healthz stays open).
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description=(
            "a worker's metrics listener (`/metrics`, and `/healthz`: 200 once consuming); 0: "
            "none. One port per worker process"
        ),
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1", description="the address a worker's metrics listener binds"
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description=(
            "when set, every `/metrics` (API and workers) answers only `Authorization: Bearer "
            "<token>`"
        ),
    )
    # The API's gauges that read Postgres and Redis (unfinished jobs, queue depths, migration
    # progress) are refreshed at most this often, whatever the number of scrapes.
    metrics_cache_s: float = Field(
        default=5.0,
        ge=0,
        description=(
            "the API reads its Postgres/Redis figures (unfinished jobs, queue depths, migrations) "
            "at most this often, however many scrapes"
        ),
    )

    # `embedq db upgrade`, run as a role that may create roles, also creates (or updates) this
    # login role for the API and workers: no superuser, no CREATEROLE, no DDL on the schema's
    # own tables; unset, no role is touched.
    app_db_role: str | None = Field(
        default=None,
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description=(
            "the login role `embedq db upgrade` creates (or updates) for the API and workers: no "
            "superuser, no CREATEROLE, no DDL on the schema's own tables; unset, no role is "
            "touched"
        ),
    )
    app_db_password: SecretStr | None = Field(default=None, description="that role's password")

    # Embedded dev stack (used when DATABASE_URL / REDIS_URL are not given)
    data_dir: Path = Field(
        default=Path(".embedq"),
        description=(
            "where `embedq demo` keeps its embedded Postgres and Valkey data and the bundled "
            "model's export"
        ),
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="log level of every process"
    )
