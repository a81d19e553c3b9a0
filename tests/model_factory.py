"""Tiny models with random weights and the shape contracts of the production models, built in
the tests because no model hub is reachable here.

- a BGE-shaped BERT: hidden 1024, CLS pooling, L2 normalisation, 512 tokens, a character-level
  Chinese vocabulary built from the texts the tests use (nothing tokenises to [UNK]);
- an ALBERT-shaped model: hidden 312, like voidful/albert_chinese_tiny, for legacy rows;
- an ALBERT laid out like the voidful/albert_chinese_tiny checkpoint itself (vocab.txt only, no
  fast tokenizer, no sentence-transformers files), to test that export-model handles it.
Figures measured on these say nothing about model quality, only about fidelity and plumbing.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BGE_INSTRUCTION = "为这个句子生成表示以用于检索相关文章："
# Characters the migration tests add to corpus sentences.
EXTRA_CHARACTERS = "（第首版）改新旧"


def song_texts(sentences: list[str], count: int, start: int = 0) -> list[str]:
    """Distinct Chinese texts for legacy rows, built from the corpus sentences."""
    return [f"{sentences[i % len(sentences)]}（第{i}首）" for i in range(start, start + count)]


def build_vocab(texts: Iterable[str]) -> list[str]:
    """Special tokens, every character of texts, and ASCII letters/digits as whole and ## pieces."""
    chars = {c for text in texts for c in text if not c.isspace()}
    chars |= set(string.ascii_lowercase + string.digits + string.punctuation)
    ordered = sorted(chars)
    ascii_pieces = [f"##{c}" for c in string.ascii_lowercase + string.digits]
    return SPECIAL_TOKENS + ordered + ascii_pieces


def _write_sentence_transformers_config(
    out_dir: Path, pooling: str, normalize: bool, max_length: int, dimension: int
) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (out_dir / "2_Normalize").mkdir(exist_ok=True)
    (out_dir / "modules.json").write_text(json.dumps(modules, indent=2))
    (out_dir / "1_Pooling").mkdir(exist_ok=True)
    (out_dir / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": dimension,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
            }
        )
    )
    (out_dir / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_length, "do_lower_case": False})
    )


def write_bert_tokenizer(out_dir: Path, texts: Iterable[str], max_length: int) -> int:
    """A WordPiece vocab.txt covering texts (one token per Chinese character) and the fast
    tokenizer's files, as BERT checkpoints ship them; returns the vocabulary size."""
    from transformers import BertTokenizerFast

    vocab = build_vocab(texts)
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(
        vocab_file=str(out_dir / "vocab.txt"),
        do_lower_case=True,
        tokenize_chinese_chars=True,
        model_max_length=max_length,
    ).save_pretrained(out_dir)
    return len(vocab)


def build_tiny_bge(out_dir: Path, texts: Iterable[str], seed: int = 0) -> Path:
    """A BERT with bge-large-zh-v1.5's output contract (1024-d, CLS, normalised, 512 tokens)."""
    import torch
    from transformers import BertConfig, BertModel

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_size = write_bert_tokenizer(out_dir, texts, 512)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=1024,
        num_hidden_layers=2,
        num_attention_heads=16,
        intermediate_size=1024,
        max_position_embeddings=512,
    )
    BertModel(config).eval().save_pretrained(out_dir, safe_serialization=True)
    _write_sentence_transformers_config(out_dir, "cls", True, 512, 1024)
    return out_dir


def build_tiny_albert(out_dir: Path, texts: Iterable[str], seed: int = 0) -> Path:
    """An ALBERT with albert_chinese_tiny's shape (hidden 312, CLS output, not normalised)."""
    import torch
    from transformers import AlbertConfig, AlbertModel, BertTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab(texts)
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    torch.manual_seed(seed)
    config = AlbertConfig(
        vocab_size=len(vocab),
        embedding_size=128,
        hidden_size=312,
        num_hidden_layers=2,
        num_attention_heads=12,
        intermediate_size=1248,
        max_position_embeddings=512,
    )
    AlbertModel(config).eval().save_pretrained(out_dir, safe_serialization=True)
    BertTokenizerFast(
        vocab_file=str(out_dir / "vocab.txt"), do_lower_case=True, model_max_length=512
    ).save_pretrained(out_dir)
    _write_sentence_transformers_config(out_dir, "cls", False, 512, 312)
    return out_dir


def build_tiny_albert_hub_style(out_dir: Path, texts: Iterable[str], seed: int = 0) -> Path:
    """A directory laid out like voidful/albert_chinese_tiny on the hub: config.json (model_type
    albert, hidden 312, embedding 128), an AlbertForMaskedLM pytorch_model.bin with random
    weights, and a BERT WordPiece vocab.txt: no tokenizer.json, no tokenizer config, no
    spiece.model, no sentence-transformers files."""
    import torch
    from transformers import AlbertConfig, AlbertForMaskedLM

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab(texts)
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    torch.manual_seed(seed)
    config = AlbertConfig(
        vocab_size=len(vocab),
        embedding_size=128,
        hidden_size=312,
        num_hidden_layers=2,
        num_attention_heads=12,
        intermediate_size=1248,
        max_position_embeddings=512,
        pad_token_id=vocab.index("[PAD]"),
    )
    AlbertForMaskedLM(config).eval().save_pretrained(out_dir, safe_serialization=False)
    return out_dir
