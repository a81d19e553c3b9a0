"""`verify`: every row with text has a new vector of the right dimension and norm from the
named model, and a sample re-embedded now matches what is stored. Rows without text are
counted, not required to have a vector."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from migrations.reembed.state import load

NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class VerifyReport:
    """Counts of rows that fail each check (0 is good) and the sample's agreement."""

    rows_with_text: int
    rows_no_text: int
    missing: int
    wrong_dimension: int
    bad_norm: int
    wrong_manifest: int
    sample_size: int
    sample_min_cos: float | None
    sample_mean_cos: float | None
    min_cos_required: float

    @property
    def ok(self) -> bool:
        """Every check passed."""
        sample_ok = self.sample_min_cos is None or self.sample_min_cos >= self.min_cos_required
        return (
            self.missing == self.wrong_dimension == self.bad_norm == self.wrong_manifest == 0
            and self.sample_size > 0
            and sample_ok
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the verdict."""
        return {**asdict(self), "ok": self.ok}


class NotVerifiable(ValueError):
    """verify checks one vector per row; a chunking vectorizer keeps windows."""


def verify(
    conn: psycopg.Connection[Any],
    name: str,
    embed: Callable[[list[str]], npt.NDArray[np.float32]],
    sample_size: int = 64,
    min_cos: float = 0.9999,
) -> VerifyReport:
    """Check every row in SQL, then re-embed a random sample and compare."""
    register_vector(conn)
    m = load(conn, name)
    if m.chunk_table is not None:
        raise NotVerifiable(
            f"{name} is a chunking vectorizer: verify checks one vector per row (its windows are"
            f" checked by `embedq vectorize status {name}`'s counts)"
        )
    cols = m.columns
    ident = {
        "new": sql.Identifier(cols.new),
        "manifest": sql.Identifier(cols.manifest),
        "text": m.text_source.expression(),
    }
    # The same rule as the backfill, status and cutover: rows without text need no vector.
    has_text = m.text_source.has_text()
    counts = conn.execute(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE {has_text}),"
            " count(*) FILTER (WHERE NOT {has_text}),"
            " count(*) FILTER (WHERE {has_text} AND {new} IS NULL),"
            " count(*) FILTER (WHERE {new} IS NOT NULL AND vector_dims({new}) <> {dim}),"
            " count(*) FILTER (WHERE {new} IS NOT NULL AND abs(vector_norm({new}) - 1) > {tol}),"
            " count(*) FILTER (WHERE {new} IS NOT NULL AND {manifest} IS DISTINCT FROM {mid})"
            " FROM {table}"
        ).format(
            has_text=has_text,
            dim=sql.Literal(m.dimension),
            tol=sql.Literal(NORM_TOLERANCE),
            mid=sql.Literal(m.manifest_id),
            table=m.table,
            **ident,
        )
    ).fetchone()
    assert counts is not None
    sample = conn.execute(
        sql.SQL(
            "SELECT {text}, {new} FROM {table} WHERE {new} IS NOT NULL AND {has_text}"
            " ORDER BY random() LIMIT {n}"
        ).format(table=m.table, has_text=has_text, n=sql.Literal(sample_size), **ident)
    ).fetchall()
    min_c: float | None = None
    mean_c: float | None = None
    if sample:
        stored = np.stack([np.asarray(row[1].to_numpy(), dtype=np.float32) for row in sample])
        fresh = np.asarray(embed([row[0] for row in sample]), dtype=np.float32)
        cosines = np.sum(stored * fresh, axis=1) / (
            np.linalg.norm(stored, axis=1) * np.linalg.norm(fresh, axis=1)
        )
        min_c, mean_c = float(cosines.min()), float(cosines.mean())
    return VerifyReport(
        rows_with_text=int(counts[0]),
        rows_no_text=int(counts[1]),
        missing=int(counts[2]),
        wrong_dimension=int(counts[3]),
        bad_norm=int(counts[4]),
        wrong_manifest=int(counts[5]),
        sample_size=len(sample),
        sample_min_cos=min_c,
        sample_mean_cos=mean_c,
        min_cos_required=min_cos,
    )
