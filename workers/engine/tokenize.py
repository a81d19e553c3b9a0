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
from workers.engine.chunking import plan_windows

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
        self._file = tokenizer_file
        self._documents: DocumentTokenizer | None = None
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

    @property
    def documents(self) -> DocumentTokenizer:
        """The same vocabulary for whole documents, cut into windows (made on first use)."""
        if self._documents is None:
            self._documents = DocumentTokenizer(self._file)
        return self._documents


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


@dataclass(frozen=True)
class Chunk:
    """One window of a document, ready for the engine: its number, text and character span in
    the document, and its token ids with the model's special tokens around them."""

    chunk_no: int
    text: str
    span_start: int
    span_end: int
    tokens: TokenizedText


class DocumentTokenizer:
    """Tokenises whole documents (no truncation) once and cuts them into token windows
    (workers/engine/chunking.py); each window's ids go to the engine as they are, with the
    model's special tokens added, so no chunk is tokenised a second time."""

    def __init__(self, tokenizer_file: Path) -> None:
        # A tokenizer of its own: truncation is a setting of the object, and the text tokenizer
        # beside it (used by other threads) truncates.
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        probe = "a"
        bare = self._tokenizer.encode(probe, add_special_tokens=False).ids
        full = self._tokenizer.encode(probe).ids
        at = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
        # [CLS] ... [SEP] for BERT, <s> ... </s> for XLM-R.
        self._prefix = full[:at]
        self._suffix = full[at + len(bare) :]

    @property
    def special_tokens(self) -> int:
        """Special tokens the model adds around every text (a window's budget excludes them)."""
        return len(self._prefix) + len(self._suffix)

    def chunk(self, texts: list[str], max_tokens: int, overlap_tokens: int) -> list[list[Chunk]]:
        """Each document's chunks, in order (at least one per document)."""
        out: list[list[Chunk]] = []
        for part in slices_by_chars(texts, CHARS_PER_TOKENIZER_CALL):
            encodings = self._tokenizer.encode_batch(list(part), add_special_tokens=False)
            for text, encoding in zip(part, encodings, strict=True):
                ids = encoding.ids
                chunks = []
                for number, window in enumerate(
                    plan_windows(text, encoding.offsets, max_tokens, overlap_tokens)
                ):
                    window_ids = [
                        *self._prefix, *ids[window.first_token : window.end_token], *self._suffix
                    ]  # fmt: skip
                    chunks.append(
                        Chunk(
                            number,
                            text[window.span_start : window.span_end],
                            window.span_start,
                            window.span_end,
                            TokenizedText(window_ids, [0] * len(window_ids), truncated=False),
                        )
                    )
                out.append(chunks)
        return out
