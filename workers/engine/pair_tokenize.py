"""Query-passage pairs encoded as FlagEmbedding's rerankers encode them: the query alone cut
at 3/4 of the model's length, the passage cut so that the pair with its special tokens fits
(`prepare_for_model(..., truncation="only_second")`), with the model's own pair template."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from embedq_core.text_limits import (
    CHARS_PER_TOKENIZER_CALL,
    chars_for_tokens,
    cut_text,
    slices_by_chars,
)
from workers.engine.tokenize import TokenizedText


class PairTokenizer:
    """Encodes one query against many passages, without padding."""

    def __init__(self, tokenizer_file: Path, max_length: int) -> None:
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.max_length = max_length
        self.query_max_tokens = max_length * 3 // 4
        processor = self._tokenizer.post_processor
        self._pair_specials = processor.num_special_tokens_to_add(True) if processor else 0
        self._max_chars = chars_for_tokens(max_length)
        named = [self._tokenizer.token_to_id(name) for name in ("[PAD]", "<pad>")]
        self.pad_id: int = next((i for i in named if i is not None), 0)

    def encode(
        self, query: str, passages: list[str], max_tokens_per_passage: int | None = None
    ) -> list[TokenizedText]:
        """Each pair's ids and type ids; truncated says the passage lost tokens."""
        encoded_query = self._tokenizer.encode(
            cut_text(query, self._max_chars)[0], add_special_tokens=False
        )
        encoded_query.truncate(self.query_max_tokens)
        room = self.max_length - len(encoded_query.ids) - self._pair_specials
        if max_tokens_per_passage is not None:
            room = min(room, max_tokens_per_passage)
        cuts = [cut_text(passage, self._max_chars) for passage in passages]
        pairs: list[TokenizedText] = []
        heads = [head for head, _ in cuts]
        start = 0
        for part in slices_by_chars(heads, CHARS_PER_TOKENIZER_CALL):
            encoded = self._tokenizer.encode_batch(list(part), add_special_tokens=False)
            for offset, passage in enumerate(encoded):
                cut_by_chars = cuts[start + offset][1]
                truncated = cut_by_chars or len(passage.ids) > room
                passage.truncate(max(room, 0))
                pair = self._tokenizer.post_process(encoded_query, passage, True)
                pairs.append(TokenizedText(pair.ids, pair.type_ids, truncated))
            start += len(part)
        return pairs
