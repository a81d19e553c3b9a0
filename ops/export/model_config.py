"""Reading a source model's own sentence-transformers config: pooling, normalisation, limits.

Legacy checkpoints without one (a Chinese ALBERT with a BERT WordPiece vocab, like
voidful/albert_chinese_tiny) get the defaults the system that embedded them used."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Pooling = Literal["cls", "mean"]

# Instructions published on model cards but absent from the repos' sentence-transformers config.
KNOWN_QUERY_INSTRUCTIONS = {
    "BAAI/bge-large-zh-v1.5": "为这个句子生成表示以用于检索相关文章：",
    "BAAI/bge-base-zh-v1.5": "为这个句子生成表示以用于检索相关文章：",
    "BAAI/bge-small-zh-v1.5": "为这个句子生成表示以用于检索相关文章：",
    "BAAI/bge-large-en-v1.5": "Represent this sentence for searching relevant passages: ",
}

# A fast tokenizer ships as tokenizer.json; SentencePiece models (the usual ALBERT) as spiece.model.
FAST_TOKENIZER_FILE = "tokenizer.json"
SENTENCEPIECE_FILE = "spiece.model"
WORDPIECE_VOCAB_FILE = "vocab.txt"
# BGE-M3 ships its lexical head as a torch state dict beside the encoder's weights.
SPARSE_LINEAR_FILE = "sparse_linear.pt"


@dataclass(frozen=True)
class SourceSemantics:
    """What the source model computes, as its own files describe it."""

    dimension: int
    pooling: Pooling | None
    normalize: bool | None
    max_length: int
    query_instruction: str | None


def _read_json(path: Path) -> dict[str, Any] | list[Any] | None:
    if not path.is_file():
        return None
    data: dict[str, Any] | list[Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def read_source_semantics(model_dir: Path, source_id: str) -> SourceSemantics:
    """Pooling, normalisation, max length and query prompt from the model directory."""
    config = _read_json(model_dir / "config.json")
    if not isinstance(config, dict):
        raise FileNotFoundError(f"{model_dir}/config.json missing: not a Hugging Face model dir")
    dimension = int(config["hidden_size"])
    max_positions = int(config.get("max_position_embeddings", 512))

    pooling: Pooling | None = None
    normalize: bool | None = None
    modules = _read_json(model_dir / "modules.json")
    if isinstance(modules, list):
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        for module in modules:
            if str(module.get("type", "")).endswith("Pooling"):
                pooling_config = _read_json(model_dir / module["path"] / "config.json")
                if isinstance(pooling_config, dict):
                    pooling = _pooling_from_config(pooling_config)

    if pooling is None and normalize is None and is_wordpiece_albert(model_dir, config):
        # Legacy Chinese ALBERT (voidful/albert_chinese_tiny and its kin) has no
        # sentence-transformers config; the old system that wrote the legacy 312-d rows with it
        # took the CLS token's hidden state, so CLS keeps new vectors comparable. Normalised,
        # because the product ranks by inner product, and normalising leaves cosine rankings
        # unchanged. max_length stays max_position_embeddings.
        pooling, normalize = "cls", True

    max_length = max_positions
    st_config = _read_json(model_dir / "sentence_bert_config.json")
    if isinstance(st_config, dict) and st_config.get("max_seq_length"):
        max_length = min(int(st_config["max_seq_length"]), max_positions)

    query_instruction = KNOWN_QUERY_INSTRUCTIONS.get(source_id)
    prompts_config = _read_json(model_dir / "config_sentence_transformers.json")
    if isinstance(prompts_config, dict):
        prompts = prompts_config.get("prompts") or {}
        if prompts.get("query"):
            query_instruction = str(prompts["query"])
    return SourceSemantics(dimension, pooling, normalize, max_length, query_instruction)


def _pooling_from_config(config: dict[str, Any]) -> Pooling:
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    modes = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
    raise ValueError(f"unsupported pooling {modes}: only CLS and mean pooling are implemented")


def needs_wordpiece_tokenizer(model_dir: Path) -> bool:
    """Only a BERT WordPiece vocab.txt: no fast tokenizer.json and no SentencePiece model."""
    return (
        (model_dir / WORDPIECE_VOCAB_FILE).is_file()
        and not (model_dir / FAST_TOKENIZER_FILE).is_file()
        and not (model_dir / SENTENCEPIECE_FILE).is_file()
    )


def is_wordpiece_albert(model_dir: Path, config: dict[str, Any]) -> bool:
    """An ALBERT that tokenizes with BertTokenizer (vocab.txt), not AlbertTokenizer."""
    architectures = [str(a) for a in config.get("architectures") or []]
    is_albert = config.get("model_type") == "albert" or any(
        a.startswith("Albert") for a in architectures
    )
    if not is_albert or (model_dir / SENTENCEPIECE_FILE).is_file():
        return False
    tokenizer_config = _read_json(model_dir / "tokenizer_config.json")
    tokenizer_class = (
        str(tokenizer_config.get("tokenizer_class") or "")
        if isinstance(tokenizer_config, dict)
        else ""
    )
    return (
        tokenizer_class.startswith("BertTokenizer") or (model_dir / WORDPIECE_VOCAB_FILE).is_file()
    )


def is_bge_m3(model_dir: Path) -> bool:
    """An XLM-RoBERTa encoder with a BGE-M3 sparse head (sparse_linear.pt) beside its weights;
    a ColBERT head (colbert_linear.pt) may be there too and is not exported."""
    config = _read_json(model_dir / "config.json")
    return (
        isinstance(config, dict)
        and config.get("model_type") == "xlm-roberta"
        and (model_dir / SPARSE_LINEAR_FILE).is_file()
    )
