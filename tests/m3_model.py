"""A tiny BGE-M3-shaped checkpoint with random weights, built in the tests (no hub here).

Laid out like BAAI/bge-m3: an XLM-RoBERTa encoder (8,194 positions, so 8,192 tokens plus the
padding offset), `sparse_linear.pt` (torch.nn.Linear(hidden, 1) state dict) and a
`colbert_linear.pt` beside the weights, a Unigram tokenizer.json with XLM-R's special tokens
(<s>=0, <pad>=1, </s>=2, <unk>=3) and a sentence-transformers config (CLS, normalised, 8,192).
Hidden size, depth and heads are tiny. The vocabulary holds every whitespace-separated word
of the texts given (and every character), so product codes and names stay whole tokens.

The sparse head's bias is positive, so every token of a text gets a weight: a deterministic
toy whose lexical scores behave like a (randomly weighted) word overlap. Figures measured on
it say nothing about BGE-M3's quality, only about fidelity and plumbing.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path

from tests.model_factory import _write_sentence_transformers_config

M3_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
M3_MAX_TOKENS = 8192
WORD_SCORE = -2.0  # a whole word beats its characters (each -6) in Unigram's Viterbi
CHAR_SCORE = -6.0


def m3_pieces(texts: Iterable[str]) -> list[tuple[str, float]]:
    """Unigram pieces: specials, "▁word" for each word, and each character with and without ▁."""
    words = {w for text in texts for w in text.split()}
    chars = {c for w in words for c in w} | set(string.ascii_letters + string.digits)
    chars |= set(string.punctuation)
    pieces = [(s, 0.0) for s in M3_SPECIALS]
    pieces += [(f"▁{w}", WORD_SCORE) for w in sorted(words)]
    pieces += [(c, CHAR_SCORE) for c in sorted(chars)]
    pieces += [(f"▁{c}", CHAR_SCORE) for c in sorted(chars) if f"▁{c}" not in dict(pieces)]
    pieces.append(("▁", CHAR_SCORE))
    return pieces


def _write_tokenizer(out_dir: Path, texts: Iterable[str]) -> int:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizerFast

    pieces = m3_pieces(texts)
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    tokenizer.add_special_tokens(M3_SPECIALS)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    XLMRobertaTokenizerFast(
        tokenizer_file=str(out_dir / "tokenizer.json"), model_max_length=M3_MAX_TOKENS
    ).save_pretrained(str(out_dir))
    return len(pieces)


def build_tiny_m3(out_dir: Path, texts: Iterable[str], seed: int = 0, hidden: int = 32) -> Path:
    """The checkpoint directory (see the module docstring)."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_size = _write_tokenizer(out_dir, texts)
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
