"""A block of queries' nearest rows of the corpus, found by Postgres beside the vectors: each
query's vector is read from the query-vectors collection and searched in the corpus's HNSW
index (with `hnsw.ef_search` raised to the candidates wanted) or exactly (index scans off)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import Connection

from embedq_core.catalog import Collection
from ops.mining.sampling import Candidate

# pgvector's upper bound for hnsw.ef_search; an HNSW scan returns at most ef_search rows.
MAX_EF_SEARCH = 1000


@dataclass(frozen=True)
class SearchPlan:
    """How many candidates per query, and how they are found."""

    per_query: int
    exact: bool
    ef_search: int


def plan_search(per_query: int, exact: bool, ef_search: int | None) -> SearchPlan:
    """Check that HNSW can return `per_query` rows; exact search has no such bound."""
    ef = max(per_query, ef_search or 0)
    if not exact and ef > MAX_EF_SEARCH:
        raise ValueError(
            f"{per_query} candidates per query is more than an HNSW scan returns "
            f"(hnsw.ef_search <= {MAX_EF_SEARCH}): lower the range's end or pass --exact"
        )
    return SearchPlan(per_query, exact, min(ef, MAX_EF_SEARCH))


def _quoted(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def nearest_rows(
    conn: Connection,
    corpus: Collection,
    vectors: Collection,
    query_ids: list[str],
    plan: SearchPlan,
) -> dict[str, list[Candidate]]:
    """For each query id (a row of `vectors`), its `plan.per_query` nearest corpus rows."""
    conn.exec_driver_sql(
        "SELECT set_config('hnsw.ef_search', %(ef)s, true), "
        "set_config('enable_indexscan', %(index)s, true)",
        {"ef": str(plan.ef_search), "index": "off" if plan.exact else "on"},
    )
    # A vector of 1024 floats is stored out of line (TOAST), and an outer column referenced in
    # the lateral search would be fetched again for every distance computed: the subquery
    # (kept apart by OFFSET 0) hands each query's vector over once, already fetched.
    rows = conn.exec_driver_sql(
        f"SELECT q.id AS query_id, c.id, c.text, c.score "
        f"FROM (SELECT id, embedding::real[]::vector AS embedding"
        f" FROM {_quoted(conn, vectors.vector_table)} WHERE id = ANY(%(ids)s) OFFSET 0) q "
        f"CROSS JOIN LATERAL ("
        f" SELECT v.id, v.text, -(v.embedding <#> q.embedding) AS score"
        f" FROM {_quoted(conn, corpus.vector_table)} v"
        f" ORDER BY v.embedding <#> q.embedding LIMIT %(k)s) c",
        {"k": plan.per_query, "ids": query_ids},
    ).all()
    found: dict[str, list[Candidate]] = defaultdict(list)
    for row in rows:
        found[row.query_id].append(Candidate(row.id, row.text, float(row.score)))
    return found


def pair_scores(
    conn: Connection, left: Collection, right: Collection, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[float, str]]:
    """Cosine of each (left id, right id) pair and the right row's text; pairs with a
    missing row are left out."""
    if not pairs:
        return {}
    rows = conn.exec_driver_sql(
        f"SELECT p.l AS left_id, p.r AS right_id, -(a.embedding <#> b.embedding) AS score, "
        f"b.text FROM unnest(%(l)s::text[], %(r)s::text[]) AS p(l, r) "
        f"JOIN {_quoted(conn, left.vector_table)} a ON a.id = p.l "
        f"JOIN {_quoted(conn, right.vector_table)} b ON b.id = p.r",
        {"l": [a for a, _ in pairs], "r": [b for _, b in pairs]},
    ).all()
    return {(r.left_id, r.right_id): (float(r.score), r.text) for r in rows}
