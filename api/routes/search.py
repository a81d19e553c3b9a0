"""Search a collection by text: the query is embedded by the fleet, ranked in pgvector."""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter
from sqlalchemy import Connection

from api.deps import Resources
from api.errors import field_error
from api.fleet import embed_on_fleet
from api.query_schemas import HitOut, SearchIn, SearchOut
from api.schemas import CollectionName
from api.validation import check_json
from embedq_core.catalog import Collection, get_collection

router = APIRouter(prefix="/v1/collections", tags=["query"])


def vector_literal(vector: npt.NDArray[np.float32]) -> str:
    """pgvector's text form; repr of each float32 widened to float64 reads back exactly."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def nearest(
    conn: Connection,
    collection: Collection,
    query_vector: npt.NDArray[np.float32],
    body: SearchIn,
    ef_search: int,
) -> list[HitOut]:
    """The k rows nearest to query_vector by inner product (cosine: vectors are unit length).

    Iterative index scans keep a selective filter from starving the result; they return rows
    in relaxed order, so the hits are sorted again by score.
    """
    conn.exec_driver_sql(
        "SELECT set_config('hnsw.ef_search', %(ef)s, true), "
        "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
        "set_config('enable_indexscan', %(index)s, true)",
        {"ef": str(max(ef_search, body.k)), "index": "off" if body.exact else "on"},
    )
    table = conn.dialect.identifier_preparer.quote(collection.vector_table)
    where = "WHERE metadata @> %(filter)s::jsonb" if body.filter is not None else ""
    rows = conn.exec_driver_sql(
        f"SELECT id, text, metadata, -(embedding <#> %(q)s::vector) AS score FROM {table} "
        f"{where} ORDER BY embedding <#> %(q)s::vector LIMIT %(k)s",
        {
            "q": vector_literal(query_vector),
            "k": body.k,
            "filter": json.dumps(body.filter) if body.filter is not None else None,
        },
    ).all()
    hits = [HitOut(id=r.id, score=float(r.score), text=r.text, metadata=r.metadata) for r in rows]
    return sorted(hits, key=lambda hit: -hit.score)


@router.post("/{name}/search")
def search(name: CollectionName, body: SearchIn, resources: Resources) -> SearchOut:
    """The k rows of the collection most similar to `query` (embedded with the collection's
    model and its query instruction), optionally only those whose metadata contains `filter`."""
    if body.filter is not None:
        problem = check_json(body.filter, resources.json_limits)
        if problem:
            raise field_error(422, ["filter"], problem, "json_invalid")
    with resources.engine.connect() as conn:
        collection = get_collection(conn, name)
    if collection is None:
        raise field_error(404, ["name"], f"unknown collection {name!r}", "not_found", "path")
    reply = embed_on_fleet(
        resources.redis, resources.settings, collection.manifest_id, [body.query], "query"
    )
    ef_search = body.ef_search or resources.settings.search_ef_search
    with resources.engine.begin() as conn:  # SET LOCAL-style settings need a transaction
        hits = nearest(conn, collection, reply.vectors[0], body, ef_search)
    return SearchOut(hits=hits, model=collection.manifest_id)
