"""Creating and reading collections."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import Resources
from api.errors import COLLECTION_CONFLICT_RESPONSES, field_error
from api.json_body import OffLoopJsonRoute
from api.schemas import ChunkingOut, CollectionIn, CollectionName, CollectionOut
from embedq_core.catalog import (
    Chunking,
    Collection,
    CollectionConflict,
    InvalidChunking,
    NotAnEmbedder,
    UnknownManifest,
    create_collection,
    get_collection,
)

router = APIRouter(prefix="/v1/collections", tags=["collections"], route_class=OffLoopJsonRoute)


def _out(collection: Collection) -> CollectionOut:
    return CollectionOut(
        name=collection.name,
        manifest_id=collection.manifest_id,
        dimension=collection.dimension,
        vector_table=collection.vector_table,
        max_length=collection.max_length,
        chunking=None
        if collection.chunking is None
        else ChunkingOut(
            max_tokens=collection.chunking.max_tokens,
            overlap_tokens=collection.chunking.overlap_tokens,
        ),
    )


@router.post("", status_code=status.HTTP_201_CREATED, responses=COLLECTION_CONFLICT_RESPONSES)
def create(body: CollectionIn, resources: Resources) -> CollectionOut:
    """Create a collection bound to a registered model manifest (idempotent); with `chunking`,
    each item is a document stored as token windows."""
    chunking = (
        None
        if body.chunking is None
        else Chunking(body.chunking.max_tokens, body.chunking.overlap_tokens)
    )
    try:
        return _out(create_collection(resources.engine, body.name, body.manifest_id, chunking))
    except UnknownManifest as exc:
        # A reference to a model nobody registered: not found, like an unknown `model`.
        raise field_error(
            404, ["manifest_id"], f"unknown manifest {exc}: start a worker with it", "not_found"
        ) from exc
    except CollectionConflict as exc:
        raise field_error(409, ["name"], str(exc), "conflict") from exc
    except NotAnEmbedder as exc:
        raise field_error(422, ["manifest_id"], str(exc), "not_an_embedder") from exc
    except InvalidChunking as exc:
        raise field_error(422, ["chunking"], str(exc), "invalid_chunking") from exc


@router.get("/{name}")
def read(name: CollectionName, resources: Resources) -> CollectionOut:
    """A collection's model and vectors table."""
    with resources.engine.connect() as conn:
        collection = get_collection(conn, name)
    if collection is None:
        raise field_error(404, ["name"], f"unknown collection {name!r}", "not_found", "path")
    return _out(collection)
