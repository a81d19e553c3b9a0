"""Tokenize -> runtime session -> pool -> normalise, driven by the model manifest; or, for a
reranker, pairs -> runtime session -> one logit each."""

from workers.engine.config import EngineConfig
from workers.engine.embedder import Embedder, EmbedResult, PreparedTexts
from workers.engine.reranker import Reranker, RerankResult

__all__ = ["EmbedResult", "Embedder", "EngineConfig", "PreparedTexts", "RerankResult", "Reranker"]
