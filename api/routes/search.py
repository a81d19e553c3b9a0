"""Search a collection by text: the query is embedded by the fleet, ranked in pgvector."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from api.deps import ApiResources, Resources
from api.errors import field_error
from api.fleet import WorkerFailed, embed_on_fleet, rerank_on_fleet
from api.hybrid_search import hybrid_rows, sparse_rows
from api.json_body import OffLoopJsonRoute
from api.model_choice import served_reranker
from api.query_schemas import HitOut, SearchIn, SearchOut
from api.schemas import CollectionName
from api.validation import check_json, check_text_chars
from embedq_core.catalog import Collection, get_collection
from embedq_core.sparse_vectors import sparsevec_literal

router = APIRouter(prefix="/v1/collections", tags=["query"], route_class=OffLoopJsonRoute)


def vector_literal(vector: npt.NDArray[np.float32]) -> str:
    """pgvector's text form; repr of each float32 widened to float64 reads back exactly."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def nearest(
    conn: Connection,
    collection: Collection,
    query_vector: npt.NDArray[np.float32],
    query_sparse: str | None,
    body: SearchIn,
    ef_search: int,
) -> list[HitOut]:
    """The k rows nearest to the query by the body's mode: inner product of dense vectors
    (cosine: they are unit length), of lexical weights, or both fused (api/hybrid_search.py).
    In a chunking collection, rows are chunks; grouped (the default), the k documents whose
    best chunk ranks highest, each with that chunk.

    Iterative index scans keep a selective filter from starving the result; they return rows
    in relaxed order, so the hits are sorted again by score.
    """
    chunked = collection.chunking is not None
    grouped = chunked and body.group
    conn.exec_driver_sql(
        "SELECT set_config('hnsw.ef_search', %(ef)s, true), "
        "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
        "set_config('enable_indexscan', %(index)s, true)",
        {"ef": str(max(ef_search, body.k)), "index": "off" if body.exact else "on"},
    )
    limit = body.k * CHUNKS_PER_DOCUMENT if grouped else body.k
    while True:
        hits = _ranked(conn, collection, query_vector, query_sparse, body, ef_search, limit)
        if not grouped:
            return hits
        documents = best_chunk_per_document(hits)
        # Enough documents, or every row the search can reach was read.
        if len(documents) >= body.k or len(hits) < limit or limit >= MAX_GROUP_CANDIDATES:
            return documents[: body.k]
        limit = min(limit * 4, MAX_GROUP_CANDIDATES)


# A grouped search reads this many chunks per document asked for, four times more while
# documents are missing (many top chunks of one document), up to MAX_GROUP_CANDIDATES.
CHUNKS_PER_DOCUMENT = 4
MAX_GROUP_CANDIDATES = 4_000


def best_chunk_per_document(hits: list[HitOut]) -> list[HitOut]:
    """Each document's best chunk, best document first (hits sorted best first)."""
    seen: set[str] = set()
    best = []
    for hit in hits:
        if hit.id not in seen:
            seen.add(hit.id)
            best.append(hit)
    return best


def _ranked(
    conn: Connection,
    collection: Collection,
    query_vector: npt.NDArray[np.float32],
    query_sparse: str | None,
    body: SearchIn,
    ef_search: int,
    limit: int,
) -> list[HitOut]:
    chunked = collection.chunking is not None
    table = conn.dialect.identifier_preparer.quote(collection.vector_table)
    where = "WHERE metadata @> %(filter)s::jsonb" if body.filter is not None else ""
    columns = "id, text, metadata" + (", chunk_no, span_start, span_end" if chunked else "")
    params: dict[str, Any] = {
        "q": vector_literal(query_vector),
        "s": query_sparse,
        "k": limit,
        "filter": json.dumps(body.filter) if body.filter is not None else None,
    }
    if body.mode == "sparse":
        rows = sparse_rows(conn, table, where, params, columns)
    elif body.mode == "hybrid":
        key = "id, chunk_no" if chunked else "id"
        candidates = max(ef_search, limit)
        rows = hybrid_rows(conn, table, where, params, body, candidates, columns, key)
    else:
        rows = list(
            conn.exec_driver_sql(
                f"SELECT {columns}, -(embedding <#> %(q)s::vector) AS score FROM {table} "
                f"{where} ORDER BY embedding <#> %(q)s::vector LIMIT %(k)s",
                params,
            ).all()
        )
    hits = [
        HitOut(
            id=r.id,
            score=float(r.score),
            text=r.text,
            metadata=r.metadata,
            **(
                {"chunk_no": r.chunk_no, "span_start": r.span_start, "span_end": r.span_end}
                if chunked
                else {}
            ),
        )
        for r in rows
    ]
    return sorted(hits, key=lambda hit: (-hit.score, hit.id, hit.chunk_no or 0))


@router.post("/{name}/search", response_model_exclude_none=True)
async def search(name: CollectionName, body: SearchIn, resources: Resources) -> SearchOut:
    """The k rows of the collection most similar to `query` (embedded with the collection's
    model and its query instruction), optionally only those whose metadata contains `filter`;
    `mode` picks dense, sparse (lexical) or hybrid ranking."""
    check_text_chars(body.query, ["query"], resources.settings)
    if body.filter is not None:
        problem = check_json(body.filter, resources.json_limits)
        if problem:
            raise field_error(422, ["filter"], problem, "json_invalid")
    if (
        body.mode == "hybrid"
        and body.fusion == "weighted"
        and body.dense_weight + body.sparse_weight == 0
    ):
        raise field_error(
            422, ["sparse_weight"], "dense_weight and sparse_weight are both 0", "value_error"
        )
    reranker = None
    if body.rerank is not None:
        if body.rerank.candidates < body.k:
            raise field_error(
                422,
                ["rerank", "candidates"],
                f"{body.rerank.candidates} candidates cannot give k={body.k} hits",
                "value_error",
            )
        reranker = await run_in_threadpool(
            served_reranker, resources, body.rerank.model, ["rerank", "model"]
        )
    collection = await run_in_threadpool(_collection, resources, name)
    if collection is None:
        raise field_error(404, ["name"], f"unknown collection {name!r}", "not_found", "path")
    if body.mode != "dense" and collection.sparse_dimension is None:
        raise field_error(
            422,
            ["mode"],
            f"mode {body.mode!r} needs lexical weights; collection {name!r} is bound to "
            f"{collection.manifest_id}, a dense-only model: use mode 'dense'",
            "value_error",
        )
    reply = await embed_on_fleet(
        resources.live_redis,
        resources.admission,
        resources.settings,
        collection.manifest_id,
        [body.query],
        "query",
    )
    query_sparse = None
    if collection.sparse_dimension is not None and body.mode != "dense":
        if reply.sparse is None:
            raise WorkerFailed(f"the worker for {collection.manifest_id} sent no lexical weights")
        query_sparse = sparsevec_literal(reply.sparse[0], collection.sparse_dimension)
    ef_search = body.ef_search or resources.settings.search_ef_search
    # With a reranker, its candidates are chunks (ungrouped): it scores each passage, and the
    # documents are then grouped by their best reranked chunk.
    fetch = (
        body
        if body.rerank is None
        else body.model_copy(update={"k": body.rerank.candidates, "group": False})
    )
    hits = await run_in_threadpool(
        _nearest_rows, resources, collection, reply.vectors[0], query_sparse, fetch, ef_search
    )
    if reranker is None:
        return SearchOut(hits=hits, model=collection.manifest_id)
    if hits:
        scores, _ = await rerank_on_fleet(
            resources.live_redis,
            resources.admission,
            resources.settings,
            reranker,
            body.query,
            [hit.text for hit in hits],
        )
        for hit, score in zip(hits, scores, strict=True):
            hit.rerank_score = float(score)
        hits.sort(key=lambda hit: -(hit.rerank_score or 0.0))
        if collection.chunking is not None and body.group:
            hits = best_chunk_per_document(hits)
    return SearchOut(
        hits=hits[: body.k], model=collection.manifest_id, rerank_model=reranker.manifest_id
    )


def _collection(resources: ApiResources, name: str) -> Collection | None:
    with resources.engine.connect() as conn:
        return get_collection(conn, name)


def _nearest_rows(
    resources: ApiResources,
    collection: Collection,
    vector: npt.NDArray[np.float32],
    query_sparse: str | None,
    body: SearchIn,
    ef_search: int,
) -> list[HitOut]:
    with resources.engine.begin() as conn:  # SET LOCAL-style settings need a transaction
        return nearest(conn, collection, vector, query_sparse, body, ef_search)
