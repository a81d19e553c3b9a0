"""Request and response bodies."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.validation import (
    NON_BLANK_TEXT_SCHEMA,
    STORABLE_TEXT_SCHEMA,
    StorableJsonObject,
    check_storable_text,
)
from embedq_core.tables import COLLECTION_NAME_PATTERN

CollectionName = Annotated[
    str, Path(pattern=COLLECTION_NAME_PATTERN, description="a collection's name")
]


class ItemIn(BaseModel):
    """One text to embed, keyed by the caller's id within the collection."""

    model_config = ConfigDict(strict=True)

    id: str = Field(
        min_length=1,
        description="unique within the collection; upsert key",
        json_schema_extra=NON_BLANK_TEXT_SCHEMA,
    )
    text: str = Field(
        description="the text to embed; over the model's token limit it is truncated",
        json_schema_extra=NON_BLANK_TEXT_SCHEMA,
    )
    metadata: StorableJsonObject = Field(
        default_factory=dict,
        description="a JSON object; nesting, value count and key length are limited by "
        "EMBEDQ_MAX_JSON_DEPTH, EMBEDQ_MAX_JSON_VALUES and EMBEDQ_MAX_JSON_KEY_CHARS; no NaN",
    )

    @field_validator("id")
    @classmethod
    def id_storable(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("id is empty or whitespace only")
        return check_storable_text(value)

    @field_validator("text")
    @classmethod
    def text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty or whitespace only")
        return check_storable_text(value)


class JobIn(BaseModel):
    """A batch of items to embed into one collection."""

    model_config = ConfigDict(strict=True)

    items: list[ItemIn] = Field(min_length=1)
    strict: bool = Field(
        default=False,
        description="reject texts longer than the model's token limit instead of truncating",
    )


class JobAccepted(BaseModel):
    """The answer to an accepted submission."""

    job_id: uuid.UUID
    status: str
    total: int
    batches: int


class ItemErrorOut(BaseModel):
    """Why one item failed."""

    id: str
    error: str


class JobOut(BaseModel):
    """A job's progress."""

    job_id: uuid.UUID
    collection: str
    manifest_id: str
    status: str
    total: int
    done: int
    failed: int
    truncated: int
    unchanged: int
    errors: list[ItemErrorOut]


class CollectionIn(BaseModel):
    """A new collection, bound to a registered model manifest."""

    model_config = ConfigDict(strict=True)

    name: str = Field(pattern=COLLECTION_NAME_PATTERN)
    manifest_id: str = Field(min_length=1, max_length=200, json_schema_extra=STORABLE_TEXT_SCHEMA)

    @field_validator("manifest_id")
    @classmethod
    def manifest_id_storable(cls, value: str) -> str:
        return check_storable_text(value)


class CollectionOut(BaseModel):
    """A collection and where its vectors are."""

    name: str
    manifest_id: str
    dimension: int
    vector_table: str
    max_length: int
