"""The embedding engine: what a worker loads once and calls per batch."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from embedq_core.manifest import ModelManifest
from workers.engine.batching import plan_batches, plan_turns
from workers.engine.cancellation import Cancellation, RunCancelled
from workers.engine.config import EngineConfig
from workers.engine.gate import EngineGate
from workers.engine.hardware import Hardware
from workers.engine.observer import EngineObserver, NoObserver
from workers.engine.pooling import FloatArray, l2_normalize, pool
from workers.engine.runtime import ModelSession, open_model_session
from workers.engine.sparse import SparseWeights, dropped_ids, lexical_weights
from workers.engine.tokenize import Chunk, TextTokenizer, TokenizedText
from workers.engine.turns import EngineTurn, halve

log = logging.getLogger(__name__)

InputType = Literal["passage", "query"]


@dataclass(frozen=True)
class EmbedResult:
    """Vectors in the caller's order, with per-text truncation flags and token counts; with a
    sparse manifest also each text's lexical weights {token id: weight}."""

    vectors: FloatArray
    truncated: list[bool]
    token_counts: list[int]
    sparse: list[SparseWeights] | None = None


@dataclass(frozen=True)
class PreparedTexts:
    """Texts tokenised and cut into padded engine batches (Embedder.prepare), ready to run."""

    texts: tuple[str, ...]  # as embedded: a query's instruction prefix included
    turns: list[EngineTurn]
    truncated: list[bool]
    token_counts: list[int]


class Embedder:
    """Embeds texts exactly as the manifest says: pooling, normalisation, limit and prefix."""

    def __init__(
        self,
        manifest: ModelManifest,
        tokenizer: TextTokenizer,
        session: ModelSession,
        config: EngineConfig,
    ) -> None:
        self.manifest = manifest
        self._tokenizer = tokenizer
        self._session = session
        self._max_batch_tokens = config.max_batch_tokens
        self._max_batch_size = config.max_batch_size
        self._max_preemptions = config.max_preemptions_per_batch
        self._gate = EngineGate()
        self._dropped = dropped_ids(manifest.sparse_dropped_token_ids)
        # A worker installs its metrics here (workers/telemetry/metrics.py); nothing is recorded
        # otherwise.
        self.observer: EngineObserver = NoObserver()

    @classmethod
    def from_model_dir(
        cls,
        model_dir: Path,
        config: EngineConfig,
        hardware: Hardware | None = None,
        manifest: ModelManifest | None = None,
    ) -> Embedder:
        """Load an exported model directory (ONNX file, tokenizer.json, manifest) on the backend
        the manifest, config.runtime and the hardware call for. `manifest` overrides the
        directory's own, e.g. to load its FP32 and INT8 files side by side."""
        manifest = manifest or ModelManifest.read(model_dir)
        session = open_model_session(model_dir, manifest, config, hardware)
        tokenizer = TextTokenizer(model_dir / "tokenizer.json", manifest.max_length)
        return cls(manifest, tokenizer, session, config)

    @property
    def backend(self) -> str:
        """The backend running the model, e.g. openvino-bf16."""
        return self._session.backend

    def warm_up(self) -> None:
        """Run the largest batch shape once, so arenas and kernels are ready before work."""
        width = min(
            self.manifest.max_length, max(8, self._max_batch_tokens // self._max_batch_size)
        )
        ids = np.full((self._max_batch_size, width), self._tokenizer.pad_id, dtype=np.int64)
        mask = np.ones_like(ids)
        self._session.run(ids, mask, np.zeros_like(ids))

    def embed(
        self,
        texts: list[str],
        input_type: InputType = "passage",
        urgent: bool = False,
        observed: bool = True,
    ) -> EmbedResult:
        """Embed texts; queries get the manifest's instruction prefix, passages never do.

        `urgent` (live queries) takes the engine before any waiting bulk batch; the embedder
        may be called from several threads. `observed=False` keeps the call out of the
        observer's figures (a health probe is not work)."""
        return self.run(self.prepare(texts, input_type, urgent, observed), urgent, observed)

    def prepare(
        self,
        texts: list[str],
        input_type: InputType = "passage",
        urgent: bool = False,
        observed: bool = True,
    ) -> PreparedTexts:
        """Tokenise texts and cut them into padded engine batches, without the engine: a worker
        prepares the next batch on its consumer thread while the engine runs the last one."""
        if input_type == "query" and self.manifest.query_instruction:
            texts = [self.manifest.query_instruction + t for t in texts]
        started = time.perf_counter()
        tokenized = self._tokenizer.tokenize(texts)
        return self._prepare_tokenized(texts, tokenized, started, urgent, observed)

    def chunk(
        self, documents: list[str], max_tokens: int, overlap_tokens: int
    ) -> list[list[Chunk]]:
        """Each document cut into token windows (tokenised once, whole: chunking.py)."""
        return self._tokenizer.documents.chunk(documents, max_tokens, overlap_tokens)

    def prepare_chunks(self, chunks: list[Chunk], observed: bool = True) -> PreparedTexts:
        """Chunks (from chunk()) as padded engine batches, their ids as they are: no chunk is
        tokenised again."""
        started = time.perf_counter()
        return self._prepare_tokenized(
            [c.text for c in chunks], [c.tokens for c in chunks], started, False, observed
        )

    def _prepare_tokenized(
        self,
        texts: list[str],
        tokenized: list[TokenizedText],
        started: float,
        urgent: bool,
        observed: bool,
    ) -> PreparedTexts:
        observer = self.observer if observed else NoObserver()
        lengths = [len(t.ids) for t in tokenized]
        batches = plan_batches(lengths, self._max_batch_tokens, self._max_batch_size)
        turns = [
            EngineTurn(
                group,
                [self._tokenizer.pad([tokenized[i] for i in batch]) for batch in group],
                [sum(lengths[i] for i in batch) for batch in group],
            )
            for group in plan_turns(lengths, batches, self._session.batches_at_once)
        ]
        observer.prepared(len(texts), time.perf_counter() - started, urgent)
        return PreparedTexts(
            tuple(texts),
            turns,
            [t.truncated for t in tokenized],
            lengths,
        )

    def run(
        self, prepared: PreparedTexts, urgent: bool = False, observed: bool = True
    ) -> EmbedResult:
        """Run the engine on texts prepare() made ready; vectors in the order they were given."""
        observer = self.observer if observed else NoObserver()
        count = len(prepared.texts)
        vectors = np.empty((count, self.manifest.dimension), dtype=np.float32)
        sparse: list[SparseWeights] = [{} for _ in range(count)]
        pending = deque(prepared.turns)
        while pending:
            turn = pending.popleft()
            # Bulk work may be cancelled by a live query (the gate does it), up to a bound.
            preemptible = not urgent and turn.preempted < self._max_preemptions
            cancellation = Cancellation() if preemptible else None
            started = time.perf_counter()
            try:
                with self._gate.turn(urgent, cancellation):
                    started = time.perf_counter()
                    outputs = self._session.run_all_together(turn.padded, cancellation)
                    for batch, (_, attention_mask, _), output in zip(
                        turn.batches, turn.padded, outputs, strict=True
                    ):
                        pooled = (
                            output[0]
                            if self.manifest.pooled_output
                            else pool(output[0], attention_mask, self.manifest.pooling)
                        )
                        vectors[batch] = l2_normalize(pooled) if self.manifest.normalize else pooled
                    engine_s = time.perf_counter() - started
            except RunCancelled:
                observer.preempted(time.perf_counter() - started)
                pending.extendleft(reversed(halve(turn, self._session.batches_at_once)))
                continue
            slots = sum(input_ids.size for input_ids, _, _ in turn.padded)
            for batch, (input_ids, attention_mask, _), output, tokens in zip(
                turn.batches, turn.padded, outputs, turn.tokens, strict=True
            ):
                if self.manifest.sparse:  # after the engine's turn: pooling needs no engine
                    weights = lexical_weights(input_ids, attention_mask, output[1], self._dropped)
                    for index, row in zip(batch, weights, strict=True):
                        sparse[index] = row
                # Batches that ran together share the turn's seconds by their padded size.
                batch_s = engine_s * input_ids.size / slots
                observer.engine_batch(len(batch), tokens, input_ids.size, batch_s, urgent)
        return EmbedResult(
            vectors=vectors,
            truncated=list(prepared.truncated),
            token_counts=list(prepared.token_counts),
            sparse=sparse if self.manifest.sparse else None,
        )
