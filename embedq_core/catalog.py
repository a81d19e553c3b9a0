"""Registering model manifests and creating collections (each with its own vectors table)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.schema import CreateTable

from embedq_core.manifest import ModelManifest
from embedq_core.tables import collections, model_manifests, vector_table, vector_table_name

# Special tokens every model we export adds around a text ([CLS] .. [SEP], <s> .. </s>): a
# chunk's window holds at most max_length minus these.
SPECIAL_TOKENS = 2


@dataclass(frozen=True)
class Chunking:
    """How a chunking collection cuts documents: windows of at most max_tokens of the model's
    tokens, each starting overlap_tokens before the last one's end."""

    max_tokens: int
    overlap_tokens: int


@dataclass(frozen=True)
class Collection:
    """A collection as the API and workers see it."""

    name: str
    manifest_id: str
    dimension: int
    vector_table: str
    max_length: int
    sparse_dimension: int | None = None  # a sparse model's vocabulary size
    chunking: Chunking | None = None


def chunking_of(max_tokens: int | None, overlap_tokens: int | None) -> Chunking | None:
    """The chunking stored in a collection's row (None: no chunking)."""
    if max_tokens is None or overlap_tokens is None:
        return None
    return Chunking(max_tokens, overlap_tokens)


class InvalidChunking(Exception):
    """The chunking asked for does not fit the model (or is not a chunking at all)."""


def check_chunking(chunking: Chunking, max_length: int) -> None:
    """Refuse windows the model cannot read whole, or an overlap as long as the window."""
    limit = max_length - SPECIAL_TOKENS
    if not 1 <= chunking.max_tokens <= limit:
        raise InvalidChunking(
            f"chunking.max_tokens must be 1..{limit} for this model (its {max_length} tokens less"
            f" {SPECIAL_TOKENS} special ones), not {chunking.max_tokens}"
        )
    if not 0 <= chunking.overlap_tokens < chunking.max_tokens:
        raise InvalidChunking(
            f"chunking.overlap_tokens must be 0..{chunking.max_tokens - 1} (less than max_tokens),"
            f" not {chunking.overlap_tokens}"
        )


def _sparse_dimension(manifest: dict[str, Any]) -> int | None:
    return int(manifest["vocab_size"]) if manifest.get("sparse") else None


class CollectionConflict(Exception):
    """The collection exists bound to a different model (or its vectors table name is taken)."""


class UnknownManifest(Exception):
    """No worker or operator has registered this manifest id."""


class NotAnEmbedder(Exception):
    """The manifest is a reranker: it scores pairs and gives no vectors to store."""


def register_model_dir(conn: Connection, model_dir: Path) -> ModelManifest:
    """Record the manifest of an exported model, with its tokenizer (idempotent)."""
    manifest = ModelManifest.read(model_dir)
    tokenizer_path = model_dir / "tokenizer.json"
    tokenizer_json = (
        tokenizer_path.read_text(encoding="utf-8") if tokenizer_path.is_file() else None
    )
    conn.execute(
        insert(model_manifests)
        .values(
            id=manifest.manifest_id,
            dimension=manifest.dimension,
            pooling=manifest.pooling,
            manifest=manifest.model_dump(mode="json"),
            tokenizer_json=tokenizer_json,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    return manifest


def get_collection(conn: Connection, name: str) -> Collection | None:
    """The named collection, or None."""
    row = (
        conn.execute(
            select(collections, model_manifests.c.manifest)
            .join(model_manifests, model_manifests.c.id == collections.c.manifest_id)
            .where(collections.c.name == name)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    return Collection(
        name=row["name"],
        manifest_id=row["manifest_id"],
        dimension=row["dimension"],
        vector_table=row["vector_table"],
        max_length=int(row["manifest"]["max_length"]),
        sparse_dimension=_sparse_dimension(row["manifest"]),
        chunking=chunking_of(row["chunk_max_tokens"], row["chunk_overlap_tokens"]),
    )


def _same_model(existing: Collection, manifest_id: str, chunking: Chunking | None) -> Collection:
    """The existing collection when it is bound to manifest_id with the same chunking (creating
    it again is a no-op), else a conflict: one table cannot hold vectors of two models, nor
    rows cut two ways."""
    if existing.manifest_id != manifest_id:
        raise CollectionConflict(
            f"collection {existing.name!r} is bound to {existing.manifest_id}, not {manifest_id}"
        )
    if existing.chunking != chunking:
        raise CollectionConflict(
            f"collection {existing.name!r} exists with chunking {_describe(existing.chunking)}, "
            f"not {_describe(chunking)}"
        )
    return existing


def _describe(chunking: Chunking | None) -> str:
    if chunking is None:
        return "off"
    return f"max_tokens={chunking.max_tokens}, overlap_tokens={chunking.overlap_tokens}"


def create_collection(
    engine: Engine, name: str, manifest_id: str, chunking: Chunking | None = None
) -> Collection:
    """Create a collection bound to a registered manifest, with its vectors table (its HNSW
    index follows once the first bulk load is over); with chunking, documents are stored as
    token windows (InvalidChunking when they would not fit the model).

    Creating it again with the same manifest and chunking is a no-op; otherwise it is a
    conflict, because one table cannot hold vectors of two models.
    """
    table_name = vector_table_name(name)
    with engine.begin() as conn:
        manifest_row = conn.execute(
            select(model_manifests.c.dimension, model_manifests.c.manifest).where(
                model_manifests.c.id == manifest_id
            )
        ).first()
        if manifest_row is None:
            raise UnknownManifest(manifest_id)
        if manifest_row.manifest.get("kind", "embedder") != "embedder":
            raise NotAnEmbedder(
                f"{manifest_id} is a reranker: a collection needs an embedding model"
            )
        max_length = int(manifest_row.manifest["max_length"])
        if chunking is not None:
            check_chunking(chunking, max_length)
        existing = get_collection(conn, name)
        if existing is not None:
            return _same_model(existing, manifest_id, chunking)
        dimension = int(manifest_row.dimension)
        inserted = conn.execute(
            insert(collections)
            .values(
                name=name,
                manifest_id=manifest_id,
                dimension=dimension,
                vector_table=table_name,
                chunk_max_tokens=chunking.max_tokens if chunking else None,
                chunk_overlap_tokens=chunking.overlap_tokens if chunking else None,
            )
            # A concurrent create of the same name committed first: it made the table; answer
            # as for an existing collection (this statement sees its committed row). No arbiter
            # index: naming `name` alone leaves the race on the unique vector_table to raise.
            .on_conflict_do_nothing()
            .returning(collections.c.name)
        ).first()
        if inserted is None:
            created = get_collection(conn, name)
            if created is None:
                raise CollectionConflict(f"the vectors table {table_name} belongs to another name")
            return _same_model(created, manifest_id, chunking)
        # The table only: its HNSW index is built after the bulk load (collection_index.py).
        sparse_dimension = _sparse_dimension(manifest_row.manifest)
        table = vector_table(name, dimension, sparse_dimension, chunked=chunking is not None)
        if not inspect(conn).has_table(table.name):
            conn.execute(CreateTable(table))
    return Collection(
        name, manifest_id, dimension, table_name, max_length, sparse_dimension, chunking
    )


def candidate_models(conn: Connection, name: str) -> list[ModelManifest]:
    """The manifests a client may mean by a collection name, a manifest id or a source model id
    (such as BAAI/bge-large-zh-v1.5): exact id first, then a collection's model, then every
    export of that source, newest registration first."""
    by_collection = select(collections.c.manifest_id).where(collections.c.name == name)
    rows = conn.execute(
        select(model_manifests.c.manifest)
        .where(
            (model_manifests.c.id == name)
            | model_manifests.c.id.in_(by_collection)
            | (model_manifests.c.manifest["source"].astext == name)
        )
        .order_by(
            (model_manifests.c.id == name).desc(),
            model_manifests.c.id.in_(by_collection).desc(),
            model_manifests.c.registered_at.desc(),
        )
    ).all()
    return [ModelManifest.model_validate(row.manifest) for row in rows]
