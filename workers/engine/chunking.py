"""Cutting a long document into token windows with overlap, preferring sentence ends.

The document is tokenised once, whole; a window holds at most `max_tokens` of its tokens and
the next one starts `overlap_tokens` before the window's end. Inside a window, the cut goes
after the last token that ends a sentence (Chinese 。！？； and their ASCII kin, or a line
break), as long as that leaves the window at least half full; a text with no such place is
cut by tokens. Each window keeps its character span in the document: spans are contiguous
(a window's span runs to where the next token after it starts), so the spans of windows
without overlap reassemble the document exactly, and with overlap each starts inside the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Sentence ends: full-width Chinese ones always, ASCII ones only before whitespace or the end
# (so 3.14 and e.g. stay whole); closing quotes and brackets after them stay with the sentence.
CJK_ENDS = frozenset("。！？；…")
ASCII_ENDS = frozenset(".!?;")
CLOSERS = frozenset("”’」』）)]】》\"'")


@dataclass(frozen=True)
class Window:
    """One chunk of a document: its tokens [first_token, end_token) and characters
    [span_start, span_end)."""

    first_token: int
    end_token: int
    span_start: int
    span_end: int


def sentence_ends(text: str, offsets: Sequence[tuple[int, int]]) -> list[bool]:
    """For each token, whether a sentence ends with it (a cut may go right after it)."""
    ends = []
    for i, (start, _) in enumerate(offsets):
        following = offsets[i + 1][0] if i + 1 < len(offsets) else len(text)
        segment = text[start:following]
        if "\n" in segment:
            ends.append(True)
            continue
        core = segment.rstrip()
        trailing_space = len(core) < len(segment) or following == len(text)
        core = core.rstrip("".join(CLOSERS))
        last = core[-1:] if core else ""
        ends.append(last in CJK_ENDS or (last in ASCII_ENDS and trailing_space))
    return ends


def plan_windows(
    text: str, offsets: Sequence[tuple[int, int]], max_tokens: int, overlap_tokens: int
) -> list[Window]:
    """The windows of a document whose tokens (no special tokens) have these character
    offsets; at least one, even for a document without tokens."""
    if max_tokens < 1 or not 0 <= overlap_tokens < max_tokens:
        raise ValueError(f"need 0 <= overlap ({overlap_tokens}) < max_tokens ({max_tokens})")
    count = len(offsets)
    if count == 0:
        return [Window(0, 0, 0, len(text))]
    ends = sentence_ends(text, offsets)
    windows: list[Window] = []
    start = 0
    while True:
        limit = min(start + max_tokens, count)
        end = limit
        if limit < count:
            floor = start + max(1, max_tokens // 2)
            for last in range(limit - 1, floor - 2, -1):
                if ends[last]:
                    end = last + 1
                    break
        windows.append(
            Window(
                start,
                end,
                0 if start == 0 else offsets[start][0],
                len(text) if end == count else offsets[end][0],
            )
        )
        if end == count:
            return windows
        start = max(end - overlap_tokens, start + 1)
