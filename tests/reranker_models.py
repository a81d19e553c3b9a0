"""Tiny cross-encoders with random weights (no hub here), laid out as the rerankers users name:
a BERT-shaped one like bge-reranker-base/large (512 tokens, token type ids) and an
XLM-R-shaped one like bge-reranker-v2-m3 (8,192 tokens). One label: the pair's relevance logit.
Figures measured on them say nothing about reranking quality, only about fidelity and plumbing.

`reference_logits` scores pairs as FlagEmbedding's encoder rerankers do (the query cut at 3/4
of the length, the passage cut so the pair fits, `prepare_for_model` with `only_second`), on
torch, as the fidelity reference.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ops.export.xlmr_tokenizer import write_xlmr_tokenizer
from tests.model_factory import write_bert_tokenizer

XLMR_MAX_TOKENS = 8192


def build_bert_reranker(out_dir: Path, texts: Iterable[str], seed: int = 0) -> Path:
    """A BertForSequenceClassification with one label, a Chinese character vocabulary."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_size = write_bert_tokenizer(out_dir, texts, 512)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
        num_labels=1,
    )
    model = BertForSequenceClassification(config).eval()
    _spread_scores(model.classifier)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_xlmr_reranker(out_dir: Path, texts: Iterable[str], seed: int = 0) -> Path:
    """An XLMRobertaForSequenceClassification with one label and 8,194 positions."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_size = write_xlmr_tokenizer(out_dir, texts, XLMR_MAX_TOKENS, max_word_chars=4)
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=XLMR_MAX_TOKENS + 2,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=1,
    )
    model = XLMRobertaForSequenceClassification(config).eval()
    _spread_scores(model.classifier.out_proj)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def _spread_scores(head: object) -> None:
    """Random initialisation gives every pair nearly the same logit (weights of std 0.02); a
    larger head spreads them, so an order and a fidelity check mean something."""
    import torch

    assert isinstance(head, torch.nn.Linear)
    with torch.no_grad():
        head.weight.mul_(100.0)


def reference_logits(
    source_dir: Path, pairs: list[tuple[str, str]], max_length: int
) -> list[float]:
    """Each pair's logit as FlagEmbedding's reranker computes it, on torch FP32."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    model = AutoModelForSequenceClassification.from_pretrained(source_dir).eval()
    queries = tokenizer(
        [q for q, _ in pairs],
        add_special_tokens=False,
        max_length=max_length * 3 // 4,
        truncation=True,
    )["input_ids"]
    passages = tokenizer(
        [p for _, p in pairs], add_special_tokens=False, max_length=max_length, truncation=True
    )["input_ids"]
    logits: list[float] = []
    for query_ids, passage_ids in zip(queries, passages, strict=True):
        item = tokenizer.prepare_for_model(
            query_ids, passage_ids, truncation="only_second", max_length=max_length, padding=False
        )
        batch = tokenizer.pad([item], return_tensors="pt")
        with torch.no_grad():
            logits.append(float(model(**batch).logits.view(-1)[0]))
    return logits
