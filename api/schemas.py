"""Request and response bodies."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field, field_validator

from api.validation import check_storable_json, check_storable_text


class ItemIn(BaseModel):
    """One text to embed, keyed by the caller's id within the collection."""

    id: str = Field(min_length=1, description="unique within the collection; upsert key")
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict, description="any JSON object")

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

    @field_validator("metadata")
    @classmethod
    def metadata_storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_storable_json(value)
        return value


class JobIn(BaseModel):
    """A batch of items to embed into one collection."""

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

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")
    manifest_id: str = Field(min_length=1)


class CollectionOut(BaseModel):
    """A collection and where its vectors are."""

    name: str
    manifest_id: str
    dimension: int
    vector_table: str
    max_length: int
