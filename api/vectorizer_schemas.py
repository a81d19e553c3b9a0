"""Bodies of /v1/vectorizers: binding a table, and a vectorizer's figures."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, Field, field_validator

from api.query_schemas import JsonBody
from api.schemas import ChunkingIn
from api.validation import STORABLE_TEXT_SCHEMA, check_storable_text

VECTORIZER_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
VectorizerName = Annotated[
    str, Path(pattern=VECTORIZER_NAME_PATTERN, description="a vectorizer's name")
]


def _name_field(description: str) -> Any:
    return Field(
        min_length=1,
        max_length=300,
        json_schema_extra=STORABLE_TEXT_SCHEMA,
        description=description,
    )


class VectorizerIn(JsonBody):
    """What `embedq vectorize add` takes: names written as in SQL."""

    _integer_fields = ("chunk_size",)

    name: str = Field(pattern=VECTORIZER_NAME_PATTERN, description="the vectorizer's name")
    table: str = _name_field("table or schema.table, as in SQL")
    id: str = _name_field("the single-column primary key")
    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=300,
        json_schema_extra=STORABLE_TEXT_SCHEMA,
        description="the text column (or give `template`)",
    )
    template: str | None = Field(
        default=None,
        min_length=1,
        max_length=4000,
        json_schema_extra=STORABLE_TEXT_SCHEMA,
        description="a template over several columns, e.g. {title}\\n{lyrics}",
    )
    vector: str = _name_field("the vector column (created if missing)")
    model: str = _name_field("a registered embedding model: manifest id or source model id")
    chunk_size: int | None = Field(default=None, ge=1, le=100_000, description="rows per step")
    chunking: ChunkingIn | None = Field(
        default=None,
        description="cut each row's text into token windows, kept in `<table>_<vector>_chunks`"
        " (one row per window); off by default",
    )

    @field_validator("table", "id", "text", "template", "vector", "model")
    @classmethod
    def storable(cls, value: str | None) -> str | None:
        return None if value is None else check_storable_text(value)


class ResumeIn(JsonBody):
    """Resume options."""

    retry_parked: bool = Field(default=False, description="give parked rows a fresh budget")


class VectorizerOut(BaseModel):
    """A vectorizer's figures, as `embedq vectorize status --json` prints them."""

    name: str
    table: str
    manifest_id: str = Field(description="the model embedding the column now")
    kind: str
    status: str
    phase: str
    rows_total: int
    rows_pending: int
    rows_done: int
    rows_no_text: int | None
    lag_s: float | None
    rate_rows_per_s: float
    rows_retrying: int
    rows_parked: int
    error: str | None
    chunk_table: str | None = Field(
        default=None, description="a chunking vectorizer's table of windows"
    )
    chunk_max_tokens: int | None = None
    chunk_overlap_tokens: int | None = None
