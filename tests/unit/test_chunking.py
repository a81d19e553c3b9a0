"""Cutting documents into token windows: spans, coverage, overlap and sentence ends, with the
bundled MiniLM's real tokenizer (one token per Chinese character, WordPiece for the rest)."""

from __future__ import annotations

import itertools

import pytest

from ops.data.corpus import load_bench_passages
from ops.devstack.bundled_model import bundled_model_source
from workers.engine.chunking import Window, plan_windows, sentence_ends
from workers.engine.tokenize import Chunk, DocumentTokenizer


@pytest.fixture(scope="module")
def documents() -> DocumentTokenizer:
    return DocumentTokenizer(bundled_model_source() / "tokenizer.json")


def _long_document() -> str:
    passages = [text for _, text in load_bench_passages(40)]
    return "\n\n".join(passages[:12])  # mixed Chinese and English, thousands of characters


def _token_ranges(
    documents: DocumentTokenizer, text: str, max_tokens: int, overlap: int
) -> list[Window]:
    encoding = documents._tokenizer.encode(text, add_special_tokens=False)
    return plan_windows(text, encoding.offsets, max_tokens, overlap)


@pytest.mark.parametrize(("max_tokens", "overlap"), [(64, 0), (64, 16), (200, 50), (510, 100)])
def test_spans_reassemble_the_document_and_every_token_is_in_a_chunk(
    documents: DocumentTokenizer, max_tokens: int, overlap: int
) -> None:
    text = _long_document()
    chunks = documents.chunk([text], max_tokens, overlap)[0]
    assert len(chunks) > 1
    assert [c.chunk_no for c in chunks] == list(range(len(chunks)))
    rebuilt, end = "", 0
    for chunk in chunks:
        assert chunk.text == text[chunk.span_start : chunk.span_end]
        assert chunk.span_start <= end  # contiguous: each starts inside or right at the last
        rebuilt += text[end : chunk.span_end]
        end = chunk.span_end
    assert rebuilt == text
    windows = _token_ranges(documents, text, max_tokens, overlap)
    count = len(documents._tokenizer.encode(text, add_special_tokens=False).ids)
    covered = set()
    for window in windows:
        covered |= set(range(window.first_token, window.end_token))
        assert window.end_token - window.first_token <= max_tokens
    assert covered == set(range(count))
    for chunk in chunks:  # the engine's input: the window's ids between [CLS] and [SEP]
        assert len(chunk.tokens.ids) <= max_tokens + documents.special_tokens
        assert chunk.tokens.ids[0] == 101 and chunk.tokens.ids[-1] == 102


@pytest.mark.parametrize("overlap", [0, 8, 31])
def test_consecutive_chunks_share_exactly_the_overlap(
    documents: DocumentTokenizer, overlap: int
) -> None:
    windows = _token_ranges(documents, _long_document(), 64, overlap)
    for before, after in itertools.pairwise(windows):
        assert before.end_token - after.first_token == overlap


def test_chinese_sentence_ends_are_preferred_inside_the_window(
    documents: DocumentTokenizer,
) -> None:
    sentence = "今天的天气非常好，我们一起去公园散步。"  # 19 characters, one token each
    text = sentence * 10 + "最后一句没有句号"
    chunks = documents.chunk([text], 50, 0)[0]
    # 50 tokens hold two whole sentences and part of a third: the cut goes after the second;
    # the last 46 tokens fit one window.
    assert [c.text for c in chunks] == [sentence * 2] * 4 + [sentence * 2 + "最后一句没有句号"]
    for mark in "！？；":
        text = ("好天气" + mark) * 30
        for chunk in documents.chunk([text], 30, 0)[0][:-1]:
            assert chunk.text.endswith(mark)


def test_line_breaks_end_sentences_and_ascii_periods_only_before_space(
    documents: DocumentTokenizer,
) -> None:
    text = "pi is 3.14 and e is 2.72\nthe end. next one"
    encoding = documents._tokenizer.encode(text, add_special_tokens=False)
    ends = sentence_ends(text, encoding.offsets)
    tokens = [text[s:e] for s, e in encoding.offsets]
    # "3.14"'s period is followed by a digit; the document's end needs no mark.
    assert [t for t, end in zip(tokens, ends, strict=True) if end] == ["72", "."]


def test_a_text_without_sentence_ends_is_cut_by_tokens(documents: DocumentTokenizer) -> None:
    text = "字" * 100
    chunks = documents.chunk([text], 30, 5)[0]
    assert [len(c.tokens.ids) - 2 for c in chunks] == [30, 30, 30, 25]
    assert [c.span_start for c in chunks] == [0, 25, 50, 75]


def test_a_document_without_tokens_is_one_empty_chunk(documents: DocumentTokenizer) -> None:
    assert documents.chunk(["   "], 10, 0)[0] == [
        Chunk(0, "   ", 0, 3, documents.chunk(["   "], 10, 0)[0][0].tokens)
    ]
    assert documents.chunk(["   "], 10, 0)[0][0].tokens.ids == [101, 102]


def test_windows_that_cannot_make_progress_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        plan_windows("abc", [(0, 3)], 4, 4)
    with pytest.raises(ValueError, match="overlap"):
        plan_windows("abc", [(0, 3)], 0, 0)
