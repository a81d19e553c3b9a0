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


@dataclass(frozen=True)
class Collection:
    """A collection as the API and workers see it."""

    name: str
    manifest_id: str
    dimension: int
    vector_table: str
    max_length: int
    sparse_dimension: int | None = None  # a sparse model's vocabulary size


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
    )


def _same_model(existing: Collection, manifest_id: str) -> Collection:
    """The existing collection when it is bound to manifest_id (creating it again is a no-op),
    else a conflict: one table cannot hold vectors of two models."""
    if existing.manifest_id != manifest_id:
        raise CollectionConflict(
            f"collection {existing.name!r} is bound to {existing.manifest_id}, not {manifest_id}"
        )
    return existing


def create_collection(engine: Engine, name: str, manifest_id: str) -> Collection:
    """Create a collection bound to a registered manifest, with its vectors table (its HNSW
    index follows once the first bulk load is over).

    Creating it again with the same manifest is a no-op; with another manifest it is a conflict,
    because one table cannot hold vectors of two models.
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
        existing = get_collection(conn, name)
        if existing is not None:
            return _same_model(existing, manifest_id)
        dimension = int(manifest_row.dimension)
        inserted = conn.execute(
            insert(collections)
            .values(
                name=name, manifest_id=manifest_id, dimension=dimension, vector_table=table_name
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
            return _same_model(created, manifest_id)
        # The table only: its HNSW index is built after the bulk load (collection_index.py).
        sparse_dimension = _sparse_dimension(manifest_row.manifest)
        table = vector_table(name, dimension, sparse_dimension)
        if not inspect(conn).has_table(table.name):
            conn.execute(CreateTable(table))
    return Collection(
        name,
        manifest_id,
        dimension,
        table_name,
        int(manifest_row.manifest["max_length"]),
        sparse_dimension,
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
