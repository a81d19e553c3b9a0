"""The embedding engine: what a worker loads once and calls per batch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from embedq_core.manifest import ModelManifest
from workers.engine.batching import plan_batches
from workers.engine.pooling import FloatArray, l2_normalize, pool
from workers.engine.runtime import OnnxSession, RuntimeChoice, select_runtime
from workers.engine.tokenize import TextTokenizer

log = logging.getLogger(__name__)

InputType = Literal["passage", "query"]


@dataclass(frozen=True)
class EmbedResult:
    """Vectors in the caller's order, with per-text truncation flags and token counts."""

    vectors: FloatArray
    truncated: list[bool]
    token_counts: list[int]


class Embedder:
    """Embeds texts exactly as the manifest says: pooling, normalisation, limit and prefix."""

    def __init__(
        self,
        manifest: ModelManifest,
        tokenizer: TextTokenizer,
        session: OnnxSession,
        max_batch_tokens: int,
        max_batch_size: int,
    ) -> None:
        self.manifest = manifest
        self._tokenizer = tokenizer
        self._session = session
        self._max_batch_tokens = max_batch_tokens
        self._max_batch_size = max_batch_size

    @classmethod
    def from_model_dir(
        cls,
        model_dir: Path,
        runtime: RuntimeChoice = "auto",
        intra_op_threads: int = 0,
        max_batch_tokens: int = 8192,
        max_batch_size: int = 32,
    ) -> Embedder:
        """Load an exported model directory (ONNX file, tokenizer.json, manifest)."""
        manifest = ModelManifest.read(model_dir)
        selection = select_runtime(runtime)
        session = OnnxSession(
            model_dir / manifest.onnx_file, selection, intra_op_threads, manifest.output_name
        )
        log.info(
            "model %s on %s (%s)", manifest.manifest_id, session.providers[0], selection.reason
        )
        tokenizer = TextTokenizer(model_dir / "tokenizer.json", manifest.max_length)
        return cls(manifest, tokenizer, session, max_batch_tokens, max_batch_size)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on, in priority order."""
        return self._session.providers

    def embed(self, texts: list[str], input_type: InputType = "passage") -> EmbedResult:
        """Embed texts; queries get the manifest's instruction prefix, passages never do."""
        if input_type == "query" and self.manifest.query_instruction:
            texts = [self.manifest.query_instruction + t for t in texts]
        tokenized = self._tokenizer.tokenize(texts)
        lengths = [len(t.ids) for t in tokenized]
        vectors = np.empty((len(texts), self.manifest.dimension), dtype=np.float32)
        for batch in plan_batches(lengths, self._max_batch_tokens, self._max_batch_size):
            input_ids, attention_mask, token_type_ids = self._tokenizer.pad(
                [tokenized[i] for i in batch]
            )
            hidden = self._session.run(input_ids, attention_mask, token_type_ids)
            pooled = pool(hidden, attention_mask, self.manifest.pooling)
            vectors[batch] = l2_normalize(pooled) if self.manifest.normalize else pooled
        return EmbedResult(
            vectors=vectors, truncated=[t.truncated for t in tokenized], token_counts=lengths
        )
