"""The worker's embedder as a re-embedding step (or a vectorizer's) sees it."""

from __future__ import annotations

from embedq_core.catalog import Chunking
from migrations.reembed.chunk_io import Encoded
from migrations.reembed.chunk_table import EncodedWindows, Window
from workers.delivery.isolation import embed_windows
from workers.engine.embedder import Embedder


class EmbedderSource:
    """Texts as passages, each as one vector or (a chunking vectorizer) as token windows."""

    def __init__(self, embedder: Embedder) -> None:
        self.manifest_id = embedder.manifest.manifest_id
        self._embedder = embedder

    def encode(self, texts: list[str]) -> Encoded:
        """Each text's unit vector (and a sparse model's weights), in order."""
        result = self._embedder.embed(texts)
        return Encoded(result.vectors, result.sparse)

    def encode_windows(self, texts: list[str], chunking: Chunking) -> EncodedWindows:
        """Each text cut as a chunking collection cuts documents, every window embedded in one
        engine call."""
        return EncodedWindows(
            [
                [Window(c.chunk_no, c.text, c.span_start, c.span_end, c.vector, c.sparse)
                 for c in windows]
                for windows in embed_windows(self._embedder, texts, chunking)
            ]
        )  # fmt: skip
