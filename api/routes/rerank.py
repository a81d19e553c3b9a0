"""Rerank documents against a query with a cross-encoder served by the workers."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from api.deps import Resources
from api.errors import field_error
from api.fleet import rerank_on_fleet
from api.json_body import OffLoopJsonRoute
from api.model_choice import served_reranker
from api.rerank_schemas import (
    RerankDocumentOut,
    RerankIn,
    RerankOut,
    RerankResultOut,
    RerankUsageOut,
)
from api.validation import check_text_chars

router = APIRouter(tags=["query"], route_class=OffLoopJsonRoute)


# /v2/rerank is the path Cohere's v2 client (cohere.ClientV2) posts to; the body and answer are
# the same (v2 sends no return_documents, and ignores the documents we return), as in vLLM.
@router.post("/v1/rerank", response_model_exclude_none=True)
@router.post("/v2/rerank", response_model_exclude_none=True)
async def rerank(body: RerankIn, resources: Resources, response: Response) -> RerankOut:
    """Order documents by relevance to the query (the shape Cohere, Jina and vLLM share)."""
    settings = resources.settings
    texts = body.texts()
    check_text_chars(body.query, ["query"], settings)
    for index, text in enumerate(texts):
        check_text_chars(text, ["documents", index], settings)
    if len(texts) > settings.max_inputs_per_request:
        raise field_error(
            413,
            ["documents"],
            f"{len(texts)} documents; at most {settings.max_inputs_per_request} per request",
            "too_many",
        )
    manifest = await run_in_threadpool(served_reranker, resources, body.model, ["model"])
    response.headers["X-Embedq-Manifest-Id"] = manifest.manifest_id
    scores, tokens = await rerank_on_fleet(
        resources.live_redis,
        resources.admission,
        settings,
        manifest,
        body.query,
        texts,
        body.max_tokens_per_doc,
    )
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))[: body.top_n]
    results = [
        RerankResultOut(
            index=i,
            relevance_score=float(scores[i]),
            document=RerankDocumentOut(text=texts[i]) if body.return_documents else None,
        )
        for i in order
    ]
    return RerankOut(
        id=uuid.uuid4().hex,
        model=body.model,
        results=results,
        usage=RerankUsageOut(total_tokens=tokens),
    )
