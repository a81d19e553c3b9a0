"""The worker's embedder as a re-embedding step (or a vectorizer's) sees it."""

from __future__ import annotations

from embedq_core.catalog import Chunking
from migrations.reembed.chunk_io import Encoded
from migrations.reembed.chunk_table import EncodedWindows, Window
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
        chunked = self._embedder.chunk(texts, chunking.max_tokens, chunking.overlap_tokens)
        flat = [chunk for chunks in chunked for chunk in chunks]
        result = self._embedder.run(self._embedder.prepare_chunks(flat))
        windows: list[list[Window]] = []
        index = 0
        for chunks in chunked:
            row = []
            for chunk in chunks:
                sparse = None if result.sparse is None else result.sparse[index]
                row.append(
                    Window(
                        chunk.chunk_no, chunk.text, chunk.span_start, chunk.span_end,
                        result.vectors[index], sparse,
                    )
                )  # fmt: skip
                index += 1
            windows.append(row)
        return EncodedWindows(windows)
