"""Fast tokenization with the exported model's own tokenizer.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from embedq_core.text_limits import (
    CHARS_PER_TOKENIZER_CALL,
    chars_for_tokens,
    cut_text,
    slices_by_chars,
)

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TokenizedText:
    """Token ids of one text, already truncated to the model's limit."""

    ids: list[int]
    type_ids: list[int]
    truncated: bool


class TextTokenizer:
    """Tokenizes without padding (batches are padded later, after length sorting)."""

    def __init__(self, tokenizer_file: Path, max_length: int) -> None:
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_length)
        self._max_chars = chars_for_tokens(max_length)
        padding = self._tokenizer.padding
        # BERT's [PAD], or XLM-R's <pad> (id 1: its position ids count from the padding id).
        named = [self._tokenizer.token_to_id(name) for name in ("[PAD]", "<pad>")]
        pad_id = next((i for i in named if i is not None), 0)
        self.pad_id: int = padding["pad_id"] if padding else pad_id

    def tokenize(self, texts: list[str]) -> list[TokenizedText]:
        """Token ids per text, with whether the text was cut at max_length. Each text is cut by
        characters first and texts are tokenised a bounded number of characters at a time, so
        a huge text costs what the model can read of it (embedq_core/text_limits.py)."""
        cuts = [cut_text(text, self._max_chars) for text in texts]
        heads = [head for head, _ in cuts]
        found: list[TokenizedText] = []
        for part in slices_by_chars(heads, CHARS_PER_TOKENIZER_CALL):
            found += [
                TokenizedText(ids=e.ids, type_ids=e.type_ids, truncated=bool(e.overflowing))
                for e in self._tokenizer.encode_batch(list(part))
            ]
        return [
            TokenizedText(t.ids, t.type_ids, True) if cut and not t.truncated else t
            for t, (_, cut) in zip(found, cuts, strict=True)
        ]

    def pad(self, batch: list[TokenizedText]) -> tuple[IntArray, IntArray, IntArray]:
        """input_ids, attention_mask and token_type_ids padded to the batch's longest text."""
        return pad_batch(batch, self.pad_id)


def pad_batch(batch: list[TokenizedText], pad_id: int) -> tuple[IntArray, IntArray, IntArray]:
    """input_ids, attention_mask and token_type_ids padded to the batch's longest sequence."""
    width = max(len(t.ids) for t in batch)
    input_ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(batch), width), dtype=np.int64)
    token_type_ids = np.zeros((len(batch), width), dtype=np.int64)
    for row, text in enumerate(batch):
        n = len(text.ids)
        input_ids[row, :n] = text.ids
        attention_mask[row, :n] = 1
        token_type_ids[row, :n] = text.type_ids
    return input_ids, attention_mask, token_type_ids
