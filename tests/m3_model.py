"""A tiny BGE-M3-shaped checkpoint with random weights, built in the tests (no hub here).

Laid out like BAAI/bge-m3: an XLM-RoBERTa encoder (8,194 positions, so 8,192 tokens plus the
padding offset), `sparse_linear.pt` (torch.nn.Linear(hidden, 1) state dict) and a
`colbert_linear.pt` beside the weights, the offline Unigram tokenizer of `ops.export.xlmr_tokenizer`
(XLM-R's special tokens) and a sentence-transformers config (CLS, normalised, 8,192). Hidden
size, depth and heads are tiny. The vocabulary holds every whitespace-separated word of the
texts given (and every character), so product codes and names stay whole tokens.

The sparse head's bias is positive, so every token of a text gets a weight: a deterministic
toy whose lexical scores behave like a (randomly weighted) word overlap. Figures measured on
it say nothing about BGE-M3's quality, only about fidelity and plumbing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ops.export.xlmr_tokenizer import write_xlmr_tokenizer
from tests.model_factory import _write_sentence_transformers_config

M3_MAX_TOKENS = 8192


def build_tiny_m3(out_dir: Path, texts: Iterable[str], seed: int = 0, hidden: int = 32) -> Path:
    """The checkpoint directory (see the module docstring)."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_size = write_xlmr_tokenizer(out_dir, texts, M3_MAX_TOKENS)
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=M3_MAX_TOKENS + 2,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    XLMRobertaModel(config).eval().save_pretrained(out_dir, safe_serialization=True)
    sparse = torch.nn.Linear(hidden, 1)
    with torch.no_grad():
        sparse.bias.fill_(1.0)  # every token weighs something: see the module docstring
        sparse.weight.mul_(0.5)
    torch.save(sparse.state_dict(), out_dir / "sparse_linear.pt")
    torch.save(torch.nn.Linear(hidden, hidden).state_dict(), out_dir / "colbert_linear.pt")
    _write_sentence_transformers_config(out_dir, "cls", True, M3_MAX_TOKENS, hidden)
    return out_dir
