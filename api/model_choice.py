"""Which registered model answers a live request: an embedder for embeddings, a reranker for
reranking, each found by manifest id, collection or source name and preferring one that some
worker serves now."""

from __future__ import annotations

from api.deps import ApiResources
from api.errors import field_error
from api.fleet import pick_served
from embedq_core.catalog import candidate_models
from embedq_core.manifest import ModelManifest


def served_embedder(resources: ApiResources, model: str, loc: list[str | int]) -> ModelManifest:
    """The embedding model `model` names; 404 when none, 422 when it names only rerankers."""
    candidates = _candidates(resources, model, loc)
    embedders = [m for m in candidates if not m.is_reranker]
    if not embedders:
        raise field_error(
            422,
            loc,
            f"{model!r} is a reranker: it scores pairs (POST /v1/rerank) and embeds nothing",
            "not_an_embedder",
        )
    chosen = pick_served(resources.redis, embedders)
    assert chosen is not None
    return chosen


def served_reranker(resources: ApiResources, model: str, loc: list[str | int]) -> ModelManifest:
    """The reranker `model` names; 404 when none, 422 when it names only embedding models."""
    candidates = _candidates(resources, model, loc)
    rerankers = [m for m in candidates if m.is_reranker]
    if not rerankers:
        raise field_error(
            422,
            loc,
            f"{model!r} is an embedding model: reranking needs a reranker (a cross-encoder)",
            "not_a_reranker",
        )
    chosen = pick_served(resources.redis, rerankers)
    assert chosen is not None
    return chosen


def _candidates(resources: ApiResources, model: str, loc: list[str | int]) -> list[ModelManifest]:
    with resources.engine.connect() as conn:
        candidates = candidate_models(conn, model)
    if not candidates:
        raise field_error(
            404,
            loc,
            f"unknown model {model!r}: name a collection, a manifest id or a source model",
            "not_found",
        )
    return candidates
