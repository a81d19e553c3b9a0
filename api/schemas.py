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
    chunks: int | None = Field(
        default=None,
        description="a chunking collection's job: chunks written for its documents (null for "
        "other collections; `total`, `done` and `failed` count documents)",
    )
    errors: list[ItemErrorOut]


class ChunkingIn(BaseModel):
    """Store each item as token windows of the collection model's tokens."""

    model_config = ConfigDict(strict=True)

    max_tokens: int = Field(
        ge=1,
        le=100_000,
        description="tokens per chunk, at most the model's max length less its 2 special tokens "
        "(510 for bge-large-zh); checked against the model (422)",
    )
    overlap_tokens: int = Field(
        default=0, ge=0, le=100_000, description="tokens a chunk shares with the one before it"
    )


class CollectionIn(BaseModel):
    """A new collection, bound to a registered model manifest."""

    model_config = ConfigDict(strict=True)

    name: str = Field(pattern=COLLECTION_NAME_PATTERN)
    manifest_id: str = Field(min_length=1, max_length=200, json_schema_extra=STORABLE_TEXT_SCHEMA)
    chunking: ChunkingIn | None = Field(
        default=None,
        description="cut each item (a document) into token windows, one row per chunk; off by "
        "default",
    )

    @field_validator("manifest_id")
    @classmethod
    def manifest_id_storable(cls, value: str) -> str:
        return check_storable_text(value)


class ChunkingOut(BaseModel):
    """A chunking collection's windows."""

    max_tokens: int
    overlap_tokens: int


class CollectionOut(BaseModel):
    """A collection and where its vectors are."""

    name: str
    manifest_id: str
    dimension: int
    vector_table: str
    max_length: int
    chunking: ChunkingOut | None = None
