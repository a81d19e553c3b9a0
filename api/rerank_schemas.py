"""Bodies of /v1/rerank: the request and answer shape Cohere, Jina and vLLM share."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from api.query_schemas import JsonBody, NonBlankText, _check_input_text
from api.validation import STORABLE_TEXT_SCHEMA, check_storable_text


class DocumentIn(JsonBody):
    """A document as an object (Jina's and Cohere's v1 form)."""

    text: NonBlankText

    @field_validator("text")
    @classmethod
    def text_usable(cls, value: str) -> str:
        return _check_input_text(value)


class RerankIn(JsonBody):
    """A query and the documents to order by relevance to it."""

    _integer_fields = ("top_n", "max_tokens_per_doc")

    model: str = Field(
        min_length=1,
        max_length=512,
        json_schema_extra=STORABLE_TEXT_SCHEMA,
        description="a reranker's manifest id or source model id, e.g. BAAI/bge-reranker-v2-m3",
    )
    query: NonBlankText = Field(description="cut at 3/4 of the model's length, as FlagEmbedding")
    documents: list[NonBlankText | DocumentIn] = Field(
        min_length=1, description="texts, or objects with a `text`"
    )
    top_n: int | None = Field(
        default=None, ge=1, description="return only the best top_n (default: all)"
    )
    return_documents: bool = Field(
        default=True, description="echo each document's text in its result"
    )
    max_tokens_per_doc: int | None = Field(
        default=None,
        ge=1,
        description="cut each document at this many tokens (it is always cut so the pair fits "
        "the model)",
    )

    @field_validator("model")
    @classmethod
    def storable(cls, value: str) -> str:
        return check_storable_text(value)

    @field_validator("query")
    @classmethod
    def query_usable(cls, value: str) -> str:
        return _check_input_text(value)

    @field_validator("documents")
    @classmethod
    def documents_usable(cls, value: list[Any]) -> list[Any]:
        for document in value:
            if isinstance(document, str):
                _check_input_text(document)
        return value

    def texts(self) -> list[str]:
        """The documents' texts, in order."""
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankDocumentOut(BaseModel):
    """The document's text, echoed."""

    text: str


class RerankResultOut(BaseModel):
    """One document: its position in the request and its relevance (sigmoid of the logit
    where the model's manifest normalises, as FlagEmbedding's normalize=True; the raw logit
    otherwise)."""

    index: int
    relevance_score: float
    document: RerankDocumentOut | None = None


class RerankUsageOut(BaseModel):
    """Tokens the model read: every pair with its special tokens."""

    total_tokens: int


class RerankOut(BaseModel):
    """Results ordered by relevance, best first."""

    id: str = Field(description="this request's id")
    model: str = Field(description="the model named in the request")
    results: list[RerankResultOut]
    usage: RerankUsageOut
