"""Token counts for strict mode, with the model's own tokenizer read from the catalog.

`tokenizers` is a small Rust library, not an ML runtime; it is imported only when a strict
submission arrives, so API start-up stays light.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, select

from embedq_core.tables import model_manifests
from embedq_core.text_limits import (
    CHARS_PER_TOKENIZER_CALL,
    chars_for_tokens,
    cut_text,
    slices_by_chars,
)

_cache: dict[str, Any] = {}
_lock = threading.Lock()


def count_tokens(
    engine: Engine, manifest_id: str, texts: list[str], max_length: int
) -> list[int | None]:
    """Tokens per text (special tokens included), untruncated; None for a text too long to
    count within bounded memory, which has more than max_length tokens anyway (its cut by
    characters dropped text: embedq_core/text_limits.py)."""
    tokenizer = _tokenizer(engine, manifest_id)
    cuts = [cut_text(text, chars_for_tokens(max_length)) for text in texts]
    counts: list[int] = []
    for part in slices_by_chars([head for head, _ in cuts], CHARS_PER_TOKENIZER_CALL):
        counts += [len(encoding.ids) for encoding in tokenizer.encode_batch(list(part))]
    return [None if cut else n for n, (_, cut) in zip(counts, cuts, strict=True)]


def _tokenizer(engine: Engine, manifest_id: str) -> Any:
    with _lock:
        if manifest_id not in _cache:
            from tokenizers import Tokenizer

            with engine.connect() as conn:
                tokenizer_json = conn.execute(
                    select(model_manifests.c.tokenizer_json).where(
                        model_manifests.c.id == manifest_id
                    )
                ).scalar_one()
            if tokenizer_json is None:
                raise LookupError(f"manifest {manifest_id} was registered without a tokenizer")
            tokenizer = Tokenizer.from_str(tokenizer_json)
            tokenizer.no_truncation()
            tokenizer.no_padding()
            _cache[manifest_id] = tokenizer
        return _cache[manifest_id]
