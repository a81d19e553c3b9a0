"""Bodies of the query side: OpenAI-compatible embeddings and search by text."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from api.validation import (
    NON_BLANK_TEXT_SCHEMA,
    STORABLE_TEXT_SCHEMA,
    StorableJsonObject,
    check_storable_text,
)

MAX_K = 1000
# The schema states the pattern; the validators below give the readable reason.
NonBlankText = Annotated[
    str, WithJsonSchema({"type": "string", "minLength": 1, **NON_BLANK_TEXT_SCHEMA})
]


class JsonBody(BaseModel):
    """A request body validated strictly (no "10" strings for numbers, no 0 for false), where
    10.0 still counts as the integer 10, as JSON Schema's "integer" says."""

    model_config = ConfigDict(strict=True)
    _integer_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def integral_floats(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in cls._integer_fields:
                value = data.get(name)
                if isinstance(value, float) and value.is_integer():
                    data = {**data, name: int(value)}
        return data


def _check_input_text(value: str) -> str:
    if not value.strip():
        raise ValueError("text is empty or whitespace only")
    return check_storable_text(value)


class EmbeddingsIn(JsonBody):
    """OpenAI's embeddings request, plus `input_type`."""

    _integer_fields = ("dimensions",)

    input: NonBlankText | list[NonBlankText] = Field(
        description="a text or a list of texts (token-id arrays are not accepted)",
    )
    model: str = Field(
        min_length=1,
        json_schema_extra=STORABLE_TEXT_SCHEMA,
        max_length=512,
        description="a collection name, a manifest id, or a source model id such as "
        "BAAI/bge-large-zh-v1.5",
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64: little-endian float32, as OpenAI sends"
    )
    dimensions: int | None = Field(
        default=None,
        ge=1,
        description="only for models whose manifest says they support truncation",
    )
    user: str | None = Field(
        default=None, description="accepted and ignored", json_schema_extra=STORABLE_TEXT_SCHEMA
    )
    input_type: Literal["passage", "query"] = Field(
        default="passage",
        description="query: the model's query instruction is prefixed; passage: never",
    )
    sparse: bool = Field(
        default=False,
        description="also return each text's lexical weights as `sparse_embedding`, pgvector's "
        "sparsevec text form (models with a sparse head, such as BGE-M3, only)",
    )

    @field_validator("input", mode="before")
    @classmethod
    def no_token_ids(cls, value: Any) -> Any:
        if isinstance(value, list) and any(isinstance(v, int | list) for v in value):
            raise ValueError("token-id arrays are not accepted; send the text")
        return value

    @field_validator("input")
    @classmethod
    def texts_usable(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str):
            return _check_input_text(value)
        if not value:
            raise ValueError("input is an empty list")
        for text in value:
            _check_input_text(text)
        return value

    @field_validator("model", "user")
    @classmethod
    def storable(cls, value: str | None) -> str | None:
        return None if value is None else check_storable_text(value)


class EmbeddingOut(BaseModel):
    """One vector, in OpenAI's shape."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    sparse_embedding: str | None = Field(
        default=None, description="with `sparse: true`: '{token id + 1:weight,...}/vocab size'"
    )


class UsageOut(BaseModel):
    """Tokens the model read (its own tokenizer, special tokens and query prefix included)."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingsOut(BaseModel):
    """OpenAI's embeddings response."""

    object: Literal["list"] = "list"
    data: list[EmbeddingOut]
    model: str
    usage: UsageOut


class SearchRerankIn(JsonBody):
    """Re-score the search's candidates with a reranker and return the best k of them."""

    _integer_fields = ("candidates",)

    model: str = Field(
        min_length=1,
        max_length=512,
        json_schema_extra=STORABLE_TEXT_SCHEMA,
        description="a reranker's manifest id or source model id, e.g. BAAI/bge-reranker-v2-m3",
    )
    candidates: int = Field(
        default=50, ge=1, le=MAX_K, description="rows the search fetches for the reranker (≥ k)"
    )

    @field_validator("model")
    @classmethod
    def storable(cls, value: str) -> str:
        return check_storable_text(value)


class SearchIn(JsonBody):
    """A text query against one collection."""

    _integer_fields = ("k", "ef_search", "rrf_k")

    query: NonBlankText = Field(description="embedded with the collection's model as a query")
    k: int = Field(default=10, ge=1, le=MAX_K, description="hits to return")
    filter: StorableJsonObject | None = Field(
        default=None, description="JSON object the row's metadata must contain (@>)"
    )
    ef_search: int | None = Field(
        default=None, ge=1, le=1000, description="HNSW candidate list size (hnsw.ef_search)"
    )
    exact: bool = Field(default=False, description="exact scan instead of the HNSW index")
    mode: Literal["dense", "sparse", "hybrid"] = Field(
        default="dense",
        description="dense vectors, lexical (sparse) weights, or both fused; sparse and hybrid "
        "need a collection whose model has a sparse head (BGE-M3)",
    )
    fusion: Literal["rrf", "weighted"] = Field(
        default="rrf",
        description="hybrid: reciprocal-rank fusion of the two rankings (score = sum of "
        "1/(rrf_k + rank)), or dense_weight × cosine + sparse_weight × lexical score",
    )
    rrf_k: int = Field(default=60, ge=1, le=10_000, description="hybrid rrf: the rank offset")
    dense_weight: float = Field(default=1.0, ge=0, le=1000, description="hybrid weighted")
    sparse_weight: float = Field(
        default=0.3, ge=0, le=1000, description="hybrid weighted (BGE-M3's own default: 0.3)"
    )
    rerank: SearchRerankIn | None = Field(
        default=None,
        description="re-score `candidates` rows (dense, sparse or hybrid, as `mode` says) with "
        "a reranker and return the best k by its score",
    )
    group: bool = Field(
        default=True,
        description="a chunking collection: one hit per document, its best chunk (`false`: "
        "the best chunks, several of a document possibly); other collections ignore it",
    )

    @field_validator("query")
    @classmethod
    def query_usable(cls, value: str) -> str:
        return _check_input_text(value)


class HitOut(BaseModel):
    """One row of the collection and its score: cosine similarity (dense), lexical score
    (sparse: the inner product of the weights), or the fused score (hybrid). In a chunking
    collection, a document's chunk: the best one of the document when hits are grouped."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any]
    chunk_no: int | None = Field(default=None, description="a chunking collection's chunk")
    span_start: int | None = Field(
        default=None, description="the chunk's first character in the document"
    )
    span_end: int | None = Field(
        default=None, description="the character after the chunk's last (Python slice)"
    )
    rerank_score: float | None = Field(
        default=None,
        description="with `rerank`: the reranker's relevance score, hits ordered by it",
    )


class SearchOut(BaseModel):
    """Hits ranked by score, best first."""

    hits: list[HitOut]
    model: str = Field(description="the manifest id the query was embedded with")
    rerank_model: str | None = Field(
        default=None, description="with `rerank`: the manifest id of the reranker"
    )
