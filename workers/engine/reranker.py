"""The reranking engine: a cross-encoder's relevance logit for each query-passage pair."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedq_core.manifest import ModelManifest
from workers.engine.batching import plan_batches
from workers.engine.config import EngineConfig
from workers.engine.gate import EngineGate
from workers.engine.hardware import Hardware
from workers.engine.observer import EngineObserver, NoObserver
from workers.engine.pair_tokenize import PairTokenizer
from workers.engine.pooling import FloatArray
from workers.engine.runtime import ModelSession, open_model_session
from workers.engine.tokenize import pad_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankResult:
    """Raw logits in the passages' order, each pair's token count and whether its passage was
    cut to fit."""

    logits: FloatArray
    token_counts: list[int]
    truncated: list[bool]


class Reranker:
    """Scores pairs exactly as the manifest says: the pair template, the limits, the logit."""

    def __init__(
        self,
        manifest: ModelManifest,
        tokenizer: PairTokenizer,
        session: ModelSession,
        config: EngineConfig,
    ) -> None:
        if not manifest.is_reranker:
            raise ValueError(f"{manifest.manifest_id} is an embedder, not a reranker")
        self.manifest = manifest
        self._tokenizer = tokenizer
        self._session = session
        self._max_batch_tokens = config.max_batch_tokens
        self._max_batch_size = config.max_batch_size
        self._gate = EngineGate()
        self.observer: EngineObserver = NoObserver()

    @classmethod
    def from_model_dir(
        cls,
        model_dir: Path,
        config: EngineConfig,
        hardware: Hardware | None = None,
        manifest: ModelManifest | None = None,
    ) -> Reranker:
        """Load an exported reranker directory on the backend its manifest and the machine
        call for. `manifest` overrides the directory's own, e.g. to load its FP32 and INT8
        files side by side."""
        manifest = manifest or ModelManifest.read(model_dir)
        session = open_model_session(model_dir, manifest, config, hardware)
        tokenizer = PairTokenizer(model_dir / "tokenizer.json", manifest.max_length)
        return cls(manifest, tokenizer, session, config)

    @property
    def backend(self) -> str:
        """The backend running the model, e.g. openvino-bf16."""
        return self._session.backend

    def warm_up(self) -> None:
        """Run one pair once, so kernels are ready before the first request."""
        self.score("warm up", ["warm up"], observed=False)

    def score(
        self,
        query: str,
        passages: list[str],
        urgent: bool = False,
        observed: bool = True,
        max_tokens_per_passage: int | None = None,
    ) -> RerankResult:
        """One logit per passage against the query, in the passages' order. Pairs are sorted
        by length and cut by the token budget, like texts to embed."""
        observer = self.observer if observed else NoObserver()
        started = time.perf_counter()
        pairs = self._tokenizer.encode(query, passages, max_tokens_per_passage)
        lengths = [len(pair.ids) for pair in pairs]
        batches = plan_batches(lengths, self._max_batch_tokens, self._max_batch_size)
        observer.prepared(len(pairs), time.perf_counter() - started, urgent)
        logits = np.empty(len(pairs), dtype=np.float32)
        for batch in batches:
            padded = pad_batch([pairs[i] for i in batch], self._tokenizer.pad_id)
            with self._gate.turn(urgent):
                ran = time.perf_counter()
                output = self._session.run(*padded)
                logits[batch] = np.asarray(output, dtype=np.float32).reshape(len(batch), -1)[:, 0]
                seconds = time.perf_counter() - ran
            tokens = sum(lengths[i] for i in batch)
            observer.engine_batch(len(batch), tokens, padded[0].size, seconds, urgent)
        return RerankResult(logits, lengths, [pair.truncated for pair in pairs])
