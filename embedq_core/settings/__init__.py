"""One typed settings object, built at each entry point and passed in. Its fields are defined
in one module per concern (engine, jobs, re-embedding, API and live queries, operations), each
with its description, default and bounds: docs/reference/settings.md is rendered from them."""

from __future__ import annotations

from pydantic import BaseModel, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from embedq_core.settings.api import ApiSettings, QuerySettings
from embedq_core.settings.engine import EngineSettings
from embedq_core.settings.jobs import JobSettings
from embedq_core.settings.operations import ConnectionSettings, OperationsSettings
from embedq_core.settings.reembed import ReembedSettings

# In the order the reference lists them (pydantic takes the fields of the last base first).
GROUPS: tuple[type[BaseModel], ...] = (
    ConnectionSettings,
    EngineSettings,
    JobSettings,
    ReembedSettings,
    ApiSettings,
    QuerySettings,
    OperationsSettings,
)


class Settings(
    OperationsSettings,
    QuerySettings,
    ApiSettings,
    ReembedSettings,
    JobSettings,
    EngineSettings,
    ConnectionSettings,
    BaseSettings,
):
    """Configuration for every embedq process. Environment variables use the EMBEDQ_ prefix;
    DATABASE_URL and REDIS_URL are also read without it. A variable set to the empty string
    counts as unset (compose passes `${EMBEDQ_X:-}` for every setting a `.env` may leave out)."""

    model_config = SettingsConfigDict(
        env_prefix="EMBEDQ_",
        env_file=None,
        extra="ignore",
        populate_by_name=True,
        env_ignore_empty=True,
    )

    @model_validator(mode="after")
    def _one_body_fits_the_budget(self) -> Settings:
        if self.max_request_bytes_in_flight < self.max_request_bytes:
            raise ValueError(
                f"max_request_bytes_in_flight ({self.max_request_bytes_in_flight}) must be at "
                f"least max_request_bytes ({self.max_request_bytes})"
            )
        return self

    @model_validator(mode="after")
    def _time_limit_between_retry_and_visibility(self) -> Settings:
        # Redis would hand a batch to a second worker while the first still runs it.
        if self.task_time_limit_s >= self.visibility_timeout_s:
            raise ValueError(
                f"task_time_limit_s ({self.task_time_limit_s}) must be below "
                f"visibility_timeout_s ({self.visibility_timeout_s})"
            )
        # A worker waiting out a Postgres outage would be ended by its own watchdog.
        if self.task_time_limit_s <= self.db_retry_timeout_s:
            raise ValueError(
                f"task_time_limit_s ({self.task_time_limit_s}) must be above "
                f"db_retry_timeout_s ({self.db_retry_timeout_s}), or a worker waiting out a "
                "Postgres outage is ended by its own watchdog"
            )
        return self

    def require_database_url(self) -> str:
        """The database URL, or a clear error naming the variable to set."""
        if not self.database_url:
            raise RuntimeError(
                "DATABASE_URL is not set (embedq demo --keep-running starts an embedded stack)"
            )
        return self.database_url

    def require_redis_url(self) -> str:
        """The broker URL, or a clear error naming the variable to set."""
        if not self.redis_url:
            raise RuntimeError(
                "REDIS_URL is not set (embedq demo --keep-running starts an embedded stack)"
            )
        return self.redis_url
