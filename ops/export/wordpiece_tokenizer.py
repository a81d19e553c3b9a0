"""A fast tokenizer.json for checkpoints that ship only a BERT WordPiece vocab.txt.

Legacy Chinese ALBERT checkpoints (voidful/albert_chinese_tiny) are loaded with BertTokenizer
from vocab.txt; AutoTokenizer would pick AlbertTokenizer for them and fail for want of
spiece.model, so optimum exports such a model without a tokenizer. Workers need tokenizer.json
(`tokenizers` only), so the export builds it here. transformers is imported only when it runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ops.export.model_config import FAST_TOKENIZER_FILE, WORDPIECE_VOCAB_FILE


def _json_dict(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _do_lower_case(model_dir: Path) -> bool:
    """As the tokenizer config, else the model config, says; BertTokenizer's default: True."""
    for name in ("tokenizer_config.json", "config.json"):
        value = _json_dict(model_dir / name).get("do_lower_case")
        if isinstance(value, bool):
            return value
    return True


def write_wordpiece_tokenizer(model_dir: Path, out_dir: Path, max_length: int) -> Path:
    """Build BertTokenizerFast from model_dir/vocab.txt and save it (tokenizer.json included)
    into out_dir; returns the tokenizer.json path."""
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast(
        vocab_file=str(model_dir / WORDPIECE_VOCAB_FILE),
        do_lower_case=_do_lower_case(model_dir),
        tokenize_chinese_chars=True,
        model_max_length=max_length,
    )
    tokenizer.save_pretrained(str(out_dir))
    return out_dir / FAST_TOKENIZER_FILE
