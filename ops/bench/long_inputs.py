"""Long-input corpora for `embedq bench engine` on a shape with `long_inputs` (bge-m3): texts
that tokenise to exactly N tokens (specials included) under the export's own tokenizer.

Each text is bench passages (lyrics, FAQ answers, product text) joined end to end from a
different starting passage, cut at a token boundary. Built deterministically, so every run
measures the same texts, and checked: a text whose token count is not N is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ops.data.corpus import load_bench_passages

# Passages between text starts, so texts of one length differ from their first words on.
_START_STRIDE = 7


def _text_of_tokens(tokenizer: Any, passages: list[str], start: int, n_tokens: int) -> str:
    """Passages from start on, joined until they pass n_tokens, cut to n_tokens tokens (<s>
    and </s> included) at a token's end."""
    parts: list[str] = []
    while True:
        parts += [passages[(start + len(parts) + i) % len(passages)] for i in range(4)]
        text = " ".join(parts)
        encoding = tokenizer.encode(text)
        if len(encoding.ids) >= n_tokens:
            break
    # offsets[0] is <s>; content tokens are 1 .. n_tokens - 2, and </s> closes the cut text.
    return text[: encoding.offsets[n_tokens - 2][1]]


def long_input_texts(tokenizer_file: Path, n_tokens: int, count: int) -> list[str]:
    """count distinct texts of exactly n_tokens tokens each."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    passages = [text for _, text in load_bench_passages()]
    texts: list[str] = []
    for index in range(count):
        text = _text_of_tokens(tokenizer, passages, index * _START_STRIDE, n_tokens)
        got = len(tokenizer.encode(text).ids)
        if got != n_tokens:
            raise ValueError(f"long-input text {index} tokenises to {got}, not {n_tokens}")
        texts.append(text)
    return texts


def long_input_corpora(
    tokenizer_file: Path, lengths: Sequence[tuple[int, int]]
) -> dict[str, list[str]]:
    """One corpus per (tokens per text, texts), named "N tokens"."""
    return {
        f"{n_tokens} tokens": long_input_texts(tokenizer_file, n_tokens, count)
        for n_tokens, count in lengths
        if count > 0
    }


def sparse_shape_variants(fp32_dir: Path) -> list[str]:
    """The default variants for a sparse (BGE-M3) shape: our ONNX Runtime FP32 (the fidelity
    reference) and our default CPU path here if that is another. No sentence-transformers peers
    (minutes a text at 8,192 tokens on 2 cores) and no INT8 (refused for sparse exports)."""
    from embedq_core.manifest import ModelManifest
    from workers.engine.backend_choice import choose_backend
    from workers.engine.hardware import detect_hardware

    kind = choose_backend("auto", ModelManifest.read(fp32_dir), detect_hardware()).kind
    default = {"openvino-bf16": "ours-ov-bf16", "openvino-fp32": "ours-ov-fp32"}.get(kind)
    return ["ours-ort-fp32", *([default] if default else [])]
