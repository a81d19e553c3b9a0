"""Tokenize -> runtime session -> pool -> normalise, driven by the model manifest."""

from workers.engine.config import EngineConfig
from workers.engine.embedder import Embedder, EmbedResult, PreparedTexts

__all__ = ["EmbedResult", "Embedder", "EngineConfig", "PreparedTexts"]
