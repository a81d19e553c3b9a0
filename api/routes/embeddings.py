"""OpenAI-compatible embeddings, computed by the workers that serve the model."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from api.deps import Resources
from api.errors import field_error
from api.fleet import WorkerFailed, embed_on_fleet
from api.json_body import OffLoopJsonRoute
from api.model_choice import served_embedder
from api.query_schemas import EmbeddingOut, EmbeddingsIn, EmbeddingsOut, UsageOut
from api.validation import check_text_chars
from embedq_core.manifest import ModelManifest
from embedq_core.query_protocol import QueryReply
from embedq_core.sparse_vectors import sparsevec_literal

router = APIRouter(prefix="/v1", tags=["query"], route_class=OffLoopJsonRoute)


@router.post("/embeddings", response_model_exclude_none=True)
async def create_embeddings(
    body: EmbeddingsIn, resources: Resources, response: Response
) -> EmbeddingsOut:
    """Embed texts now (OpenAI's request and response shapes; the `openai` client works).

    `input_type: "query"` applies the model's query instruction; texts over the model's
    token limit are truncated at it.
    """
    texts = [body.input] if isinstance(body.input, str) else body.input
    settings = resources.settings
    for index, text in enumerate(texts):
        check_text_chars(
            text, ["input"] if isinstance(body.input, str) else ["input", index], settings
        )
    if len(texts) > settings.max_inputs_per_request:
        raise field_error(
            413,
            ["input"],
            f"{len(texts)} inputs; at most {settings.max_inputs_per_request} per request",
            "too_many",
        )
    manifest = await run_in_threadpool(served_embedder, resources, body.model, ["model"])
    if body.dimensions is not None and body.dimensions != manifest.dimension:
        if not manifest.supports_dimensions:
            raise field_error(
                422,
                ["dimensions"],
                f"model {manifest.manifest_id} gives {manifest.dimension}-d vectors and does "
                "not support truncation",
                "unsupported",
            )
        if body.dimensions > manifest.dimension:
            raise field_error(
                422,
                ["dimensions"],
                f"at most {manifest.dimension} for model {manifest.manifest_id}",
                "too_large",
            )
    if body.sparse and not manifest.sparse:
        raise field_error(
            422,
            ["sparse"],
            f"model {manifest.manifest_id} has no sparse head (lexical weights)",
            "unsupported",
        )
    # `model` echoes the client's name, as OpenAI does; this says which export answered.
    response.headers["X-Embedq-Manifest-Id"] = manifest.manifest_id
    reply = await embed_on_fleet(
        resources.live_redis,
        resources.admission,
        settings,
        manifest.manifest_id,
        texts,
        body.input_type,
    )
    # Truncating, normalising and encoding thousands of vectors: off the event loop.
    return await run_in_threadpool(_embeddings_out, body, manifest, reply, len(texts))


def _embeddings_out(
    body: EmbeddingsIn, manifest: ModelManifest, reply: QueryReply, count: int
) -> EmbeddingsOut:
    vectors = reply.vectors
    if body.dimensions is not None and body.dimensions < manifest.dimension:
        vectors = vectors[:, : body.dimensions]
        if manifest.normalize:
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    sparse: list[str | None] = [None] * count
    if body.sparse and manifest.vocab_size is not None:
        if reply.sparse is None:
            raise WorkerFailed(f"the worker for {manifest.manifest_id} sent no lexical weights")
        sparse = [sparsevec_literal(w, manifest.vocab_size) for w in reply.sparse]
    data = [
        EmbeddingOut(
            index=i,
            embedding=(
                base64.b64encode(row.tobytes()).decode("ascii")
                if body.encoding_format == "base64"
                else row.tolist()
            ),
            sparse_embedding=sparse[i],
        )
        for i, row in enumerate(vectors)
    ]
    tokens = sum(reply.token_counts)
    return EmbeddingsOut(
        data=data, model=body.model, usage=UsageOut(prompt_tokens=tokens, total_tokens=tokens)
    )
