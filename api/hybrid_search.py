"""Sparse and hybrid ranking in SQL, for collections whose model has a sparse head (BGE-M3).

sparse: rows ranked by the inner product of their stored lexical weights with the query's
(FlagEmbedding's lexical matching score), through the sparsevec HNSW index once it is built.
hybrid: each arm (dense, sparse) takes its best `candidates` rows through its own index; the
union is ranked by reciprocal-rank fusion (a row missing from an arm gets nothing from it) or
by a weighted sum of both exact scores, read from the row itself.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row

from api.query_schemas import SearchIn
from embedq_core.sparse_vectors import SPARSE_COLUMN

_ARM = (
    "SELECT {key}, row_number() OVER (ORDER BY distance, {key}) AS rank FROM ("
    "SELECT {key}, {column} <#> %({param})s::{kind} AS distance FROM {table} {where}"
    " ORDER BY {column} <#> %({param})s::{kind} LIMIT %(n)s) {name}"
)
_FUSED_SCORE = {
    "rrf": "COALESCE(1.0 / (%(rrf_k)s + d.rank), 0) + COALESCE(1.0 / (%(rrf_k)s + s.rank), 0)",
    "weighted": "%(wd)s * -(v.embedding <#> %(q)s::vector)"
    f" + %(ws)s * COALESCE(-(v.{SPARSE_COLUMN} <#> %(s)s::sparsevec), 0)",
}


def sparse_rows(
    conn: Connection, table: str, where: str, params: dict[str, Any], columns: str
) -> list[Row[Any]]:
    """The k rows with the highest lexical score (`columns`: what each row gives)."""
    return list(
        conn.exec_driver_sql(
            f"SELECT {columns}, -({SPARSE_COLUMN} <#> %(s)s::sparsevec) AS score"
            f" FROM {table} {where} ORDER BY {SPARSE_COLUMN} <#> %(s)s::sparsevec LIMIT %(k)s",
            params,
        ).all()
    )


def hybrid_rows(
    conn: Connection,
    table: str,
    where: str,
    params: dict[str, Any],
    body: SearchIn,
    candidates: int,
    columns: str,
    key: str,
) -> list[Row[Any]]:
    """The k best rows of the union of both arms' candidates, by the body's fusion (`key`: a
    row's key columns, `id` or `id, chunk_no`). Each arm's ranks are numbered by distance
    again: an iterative index scan returns rows in relaxed order."""
    dense_arm = _ARM.format(
        table=table, where=where, column="embedding", param="q", kind="vector", name="dx", key=key
    )
    sparse_arm = _ARM.format(
        table=table, where=where, column=SPARSE_COLUMN, param="s", kind="sparsevec", name="sx",
        key=key,
    )  # fmt: skip
    selected = ", ".join(f"v.{c.strip()}" for c in columns.split(","))
    query = (
        f"WITH d AS ({dense_arm}), s AS ({sparse_arm}) "
        f"SELECT {selected}, {_FUSED_SCORE[body.fusion]} AS score "
        f"FROM d FULL JOIN s USING ({key}) JOIN {table} v USING ({key}) "
        f"ORDER BY score DESC, {', '.join(f'v.{c.strip()}' for c in key.split(','))} LIMIT %(k)s"
    )
    fused = {
        **params,
        "n": candidates,
        "rrf_k": body.rrf_k,
        "wd": body.dense_weight,
        "ws": body.sparse_weight,
    }
    return list(conn.exec_driver_sql(query, fused).all())
