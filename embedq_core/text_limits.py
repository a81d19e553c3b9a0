"""How much of one text can reach a tokenizer: a text is cut by characters first, so an
oversize text costs memory in proportion to what the model can read, not to its length.

No token of a BERT WordPiece vocabulary covers more than 100 characters (a longer word becomes
one [UNK]; `max_input_chars_per_word`), and SentencePiece pieces are far shorter: so the first
max_length × 101 characters hold at least the model's max_length tokens whenever any text
does, and cutting there changes neither the ids the model sees nor whether the text was
truncated. (Only a text averaging over 100 characters per token, long runs of whitespace or of
characters the tokenizer drops, can be flagged truncated when its tokens would have fit.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

MAX_CHARS_PER_TOKEN = 101
# Characters tokenised in one call: a tokenizer holds ~180 bytes per character of its input
# while it encodes (its overflow pieces included), so a call costs at most ~50 MB.
CHARS_PER_TOKENIZER_CALL = 262_144

_NON_SPACE = re.compile(r"\S")


def chars_for_tokens(max_length: int) -> int:
    """The characters of a text a model with max_length tokens can read at most."""
    return max_length * MAX_CHARS_PER_TOKEN


def cut_text(text: str, max_chars: int) -> tuple[str, bool]:
    """The text's first max_chars characters, and whether anything but whitespace was cut off
    (found without copying the rest)."""
    if len(text) <= max_chars:
        return text, False
    return text[:max_chars], _NON_SPACE.search(text, max_chars) is not None


def slices_by_chars(texts: Sequence[str], chars_per_slice: int) -> Iterator[Sequence[str]]:
    """Consecutive runs of texts of at most chars_per_slice characters in all (a longer text
    alone), so a tokenizer call's memory stays bounded however many texts a batch holds."""
    start = 0
    while start < len(texts):
        end, total = start, 0
        while end < len(texts) and (end == start or total + len(texts[end]) <= chars_per_slice):
            total += len(texts[end])
            end += 1
        yield texts[start:end]
        start = end
