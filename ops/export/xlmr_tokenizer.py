"""An offline XLM-R-style Unigram tokenizer (no hub here), for BGE-M3-shaped models with random
weights: the bench's `--shape bge-m3` and the tests' tiny BGE-M3 build it the same way.

XLM-R's special tokens (<s>=0, <pad>=1, </s>=2, <unk>=3), a Metaspace pre-tokenizer and
"<s> $A </s>" around each text, as BAAI/bge-m3's tokenizer.json has. The vocabulary holds
"▁word" for each whitespace-separated word of the texts given (so product codes and names stay
whole tokens) and every character, so nothing tokenises to <unk>.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path

XLMR_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
WORD_SCORE = -2.0  # a whole word beats its characters (each -6) in Unigram's Viterbi
CHAR_SCORE = -6.0


def xlmr_pieces(texts: Iterable[str], max_word_chars: int | None = None) -> list[tuple[str, float]]:
    """Unigram pieces: specials, "▁word" for each word, and each character with and without ▁.
    Words longer than max_word_chars get no piece of their own (unspaced Chinese text is one
    "word" per clause: without the cap it would be one token, with it one token a character)."""
    words = {w for text in texts for w in text.split()}
    chars = {c for w in words for c in w} | set(string.ascii_letters + string.digits)
    chars |= set(string.punctuation)
    if max_word_chars is not None:
        words = {w for w in words if len(w) <= max_word_chars}
    pieces = [(s, 0.0) for s in XLMR_SPECIALS]
    pieces += [(f"▁{w}", WORD_SCORE) for w in sorted(words)]
    pieces += [(c, CHAR_SCORE) for c in sorted(chars)]
    known = dict(pieces)
    pieces += [(f"▁{c}", CHAR_SCORE) for c in sorted(chars) if f"▁{c}" not in known]
    pieces.append(("▁", CHAR_SCORE))
    return pieces


def write_xlmr_tokenizer(
    out_dir: Path, texts: Iterable[str], max_length: int, max_word_chars: int | None = None
) -> int:
    """Write tokenizer.json and the transformers tokenizer files into out_dir; returns the
    vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizerFast

    pieces = xlmr_pieces(texts, max_word_chars)
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    tokenizer.add_special_tokens(XLMR_SPECIALS)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    XLMRobertaTokenizerFast(
        tokenizer_file=str(out_dir / "tokenizer.json"), model_max_length=max_length
    ).save_pretrained(str(out_dir))
    return len(pieces)
