"""Embedding a batch so that one text the engine cannot embed fails alone, with its reason."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from embedq_core.catalog import Chunking
from workers.engine import EmbedResult, PreparedTexts
from workers.engine.sparse import SparseWeights
from workers.engine.tokenize import Chunk

log = logging.getLogger(__name__)


class TextEmbedder(Protocol):
    """What this module needs of the engine."""

    def embed(self, texts: list[str]) -> EmbedResult:
        """Vectors and truncation flags for texts, in order."""
        raise NotImplementedError

    def run(self, prepared: PreparedTexts) -> EmbedResult:
        """embed() of texts already tokenised (Embedder.prepare)."""
        raise NotImplementedError

    def chunk(
        self, documents: list[str], max_tokens: int, overlap_tokens: int
    ) -> list[list[Chunk]]:
        """Each document cut into token windows."""
        raise NotImplementedError

    def prepare_chunks(self, chunks: list[Chunk]) -> PreparedTexts:
        """Chunks as engine batches, their token ids as they are."""
        raise NotImplementedError


@dataclass(frozen=True)
class EmbeddedChunk:
    """One chunk of a document with its vector (and a sparse model's lexical weights)."""

    chunk_no: int
    text: str
    span_start: int
    span_end: int
    vector: npt.NDArray[np.float32]
    sparse: SparseWeights | None


@dataclass
class Embedded:
    """Vectors (with truncation flags) by id, and the ids that could not be embedded; with a
    sparse model also the lexical weights by id."""

    vectors: dict[str, tuple[npt.NDArray[np.float32], bool]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    sparse: dict[str, SparseWeights] = field(default_factory=dict)
    chunks: dict[str, list[EmbeddedChunk]] = field(default_factory=dict)  # documents' chunks

    def update(self, other: Embedded) -> None:
        """Take in the results of another call."""
        self.vectors |= other.vectors
        self.errors |= other.errors
        self.sparse |= other.sparse
        self.chunks |= other.chunks

    def has_result(self, key: str) -> bool:
        """Whether the item was embedded (as a text or as a document's chunks)."""
        return key in self.vectors or key in self.chunks


def embed_isolating(
    embedder: TextEmbedder,
    items: Sequence[tuple[str, str]],
    prepared: PreparedTexts | None = None,
) -> Embedded:
    """Embed (id, text) pairs in one call (of `prepared`, the same texts tokenised ahead, when
    given); if that call fails, embed them one by one, so only the texts that fail on their own
    are reported, each with its error.

    If no text embeds on its own either (a single text, or an engine that fails on anything),
    the input cannot be blamed: the first error is raised, the delivery fails, and the attempt
    counter bounds the retries."""
    if not items:
        return Embedded()
    texts = [text for _, text in items]
    if prepared is not None and list(prepared.texts) != texts:
        raise ValueError("prepared for other texts than these items")

    def together(group: Sequence[tuple[str, str]]) -> Embedded:
        if prepared is not None and len(group) == len(items):
            return _collect(group, embedder.run(prepared))
        return _collect(group, embedder.embed([text for _, text in group]))

    return _one_by_one_on_failure(items, together, "texts")


def embed_documents_isolating(
    embedder: TextEmbedder, items: Sequence[tuple[str, str]], chunking: Chunking
) -> Embedded:
    """Cut (id, document) pairs into chunks and embed every chunk in one call; if that fails,
    each document alone, so only the documents that fail on their own are reported (as
    embed_isolating does for texts)."""
    if not items:
        return Embedded()

    def together(group: Sequence[tuple[str, str]]) -> Embedded:
        windows = embed_windows(embedder, [text for _, text in group], chunking)
        return Embedded(chunks={key: w for (key, _), w in zip(group, windows, strict=True)})

    return _one_by_one_on_failure(items, together, "documents")


def embed_windows(
    embedder: TextEmbedder, documents: list[str], chunking: Chunking
) -> list[list[EmbeddedChunk]]:
    """Each document cut into token windows and every window embedded, in one engine call;
    the windows in the documents' order (also a chunking vectorizer's step)."""
    chunked = embedder.chunk(documents, chunking.max_tokens, chunking.overlap_tokens)
    flat = [chunk for chunks in chunked for chunk in chunks]
    result = embedder.run(embedder.prepare_chunks(flat))
    out: list[list[EmbeddedChunk]] = []
    row = 0
    for chunks in chunked:
        embedded = []
        for chunk in chunks:
            sparse = None if result.sparse is None else result.sparse[row]
            embedded.append(
                EmbeddedChunk(
                    chunk.chunk_no, chunk.text, chunk.span_start, chunk.span_end,
                    result.vectors[row], sparse,
                )
            )  # fmt: skip
            row += 1
        out.append(embedded)
    return out


def _one_by_one_on_failure(
    items: Sequence[tuple[str, str]],
    together: Callable[[Sequence[tuple[str, str]]], Embedded],
    what: str,
) -> Embedded:
    """together(items); if that fails, together([item]) for each item, so only the items that
    fail on their own are reported, each with its error. If none embeds alone either, the
    input cannot be blamed: the first error is raised."""
    try:
        return together(items)
    except Exception as exc:
        if len(items) == 1:
            raise
        log.warning("embedding %d %s failed (%s); one by one now", len(items), what, exc)
        batch_error = exc
    out = Embedded()
    for item in items:
        try:
            out.update(together([item]))
        except Exception as exc:
            out.errors[item[0]] = _reason(exc)
    if not out.vectors and not out.chunks:
        raise batch_error
    return out


def _collect(items: Sequence[tuple[str, str]], result: EmbedResult) -> Embedded:
    return Embedded(
        vectors={
            external_id: (result.vectors[index], result.truncated[index])
            for index, (external_id, _) in enumerate(items)
        },
        sparse={}
        if result.sparse is None
        else {external_id: result.sparse[index] for index, (external_id, _) in enumerate(items)},
    )


def _reason(exc: BaseException) -> str:
    return f"embedding failed: {type(exc).__name__}: {exc}".strip()[:2000]
