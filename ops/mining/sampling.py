"""Which candidates become a query's negatives: the rank range, the positive-aware band, the
seeded sample. Pure logic, the same for exact and HNSW candidates.

Ranks are 1-based and counted after removing the query's positives (by id and by text) and
any passage whose text equals the query, so `--range 2-200` means "from the second-best
non-positive passage to the 200th" however many positives rank high. (FlagEmbedding's
hn_mine.py slices the raw result list, positives included: its `10-210` is raw positions 11 to
210.)

The band guards against false negatives (passages as relevant as the positive, which a
large corpus is full of): a candidate scoring above `pos_share` x the positive's score, or
within `pos_margin` of it, is dropped (NV-Retriever's TopK-PercPos and TopK-MarginPos). With
several positives the weakest one sets the band. Scores are cosines of unit vectors.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MiningParams:
    """What `embedq mine` samples: ranks first..last (1-based, inclusive), how many
    negatives, the band (either bound may be off), and the seed."""

    rank_first: int
    rank_last: int
    negatives: int
    pos_share: float | None
    pos_margin: float | None
    seed: int


@dataclass(frozen=True)
class Candidate:
    """A row of the collection near a query: its id, text and cosine to the query."""

    id: str
    text: str
    score: float


@dataclass(frozen=True)
class Mined:
    """One query's negatives in rank order, their ranks, and what the band removed."""

    negatives: list[Candidate]
    ranks: list[int]
    in_range: int
    dropped_by_band: int


def parse_range(text: str) -> tuple[int, int]:
    """`2-200` -> (2, 200); 1-based, inclusive, first <= last."""
    first, sep, last = text.partition("-")
    if not sep or not first.strip().isdigit() or not last.strip().isdigit():
        raise ValueError(f"expected FIRST-LAST such as 2-200, got {text!r}")
    low, high = int(first), int(last)
    if low < 1 or low > high:
        raise ValueError(f"ranks start at 1 and FIRST <= LAST, got {text!r}")
    return low, high


def band_ceiling(pos_score: float, params: MiningParams) -> float:
    """The highest score a negative may have, given the weakest positive's score."""
    ceiling = float("inf")
    if params.pos_share is not None:
        ceiling = min(ceiling, params.pos_share * pos_score)
    if params.pos_margin is not None:
        ceiling = min(ceiling, pos_score - params.pos_margin)
    return ceiling


def ranked(
    candidates: Sequence[Candidate], query: str, pos_ids: set[str], pos_texts: set[str]
) -> list[Candidate]:
    """Candidates best first (ties by id, so exact and HNSW agree where they find the same
    rows), without positives and copies of the query."""
    kept = [
        c for c in candidates if c.id not in pos_ids and c.text not in pos_texts and c.text != query
    ]
    return sorted(kept, key=lambda c: (-c.score, c.id))


def choose_negatives(
    ordered: Sequence[Candidate], pos_score: float, params: MiningParams, line_number: int
) -> Mined:
    """Sample the negatives of one query line from its ranked candidates. The generator is
    seeded by (seed, line number), so a line's negatives do not depend on the other lines:
    a resumed run writes what an uninterrupted one would."""
    window = list(enumerate(ordered, start=1))[params.rank_first - 1 : params.rank_last]
    ceiling = band_ceiling(pos_score, params)
    allowed = [(rank, c) for rank, c in window if c.score <= ceiling]
    rng = random.Random(f"{params.seed}:{line_number}")
    chosen = sorted(rng.sample(allowed, min(params.negatives, len(allowed))), key=lambda p: p[0])
    return Mined(
        negatives=[c for _, c in chosen],
        ranks=[rank for rank, _ in chosen],
        in_range=len(window),
        dropped_by_band=len(window) - len(allowed),
    )
