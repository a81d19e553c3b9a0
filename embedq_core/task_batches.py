"""Cutting a job's items into tasks (queued batches) by an estimated token budget and a count.

A task is the engine's sorting window: the worker sorts a task's texts by length before it cuts
engine batches, so the job's texts are dealt into tasks shortest first (a job's order is kept
by item_index, not by task). A task of many short texts pads little, while a task of long
passages must stay small enough to finish well inside the task time limit and to be cheap to
re-run. The API has no tokenizer (it serves every model), so tokens are estimated from
characters: one per CJK character (BERT-style Chinese vocabularies split every Han character),
one per four other characters, plus the two special tokens. The estimate only shapes tasks;
the engine's own token budget (`max_batch_tokens`) still cuts what the model sees.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SPECIAL_TOKENS = 2  # [CLS] and [SEP], or <s> and </s>
CHARS_PER_OTHER_TOKEN = 4
# Characters a BERT-style CJK vocabulary splits one by one: CJK Unified Ideographs, Extension
# A, Hiragana and Katakana, Hangul syllables, compatibility ideographs, Extensions B onwards.
_CJK = re.compile(
    "[\u4e00-\u9fff\u3400-\u4dbf\u3040-\u30ff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]"
)
_SPACE = re.compile(r"\s")


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate of a text's tokens (CJK characters count one each)."""
    # Counted, not collected: findall would build a list as long as the text.
    cjk = sum(1 for _ in _CJK.finditer(text))
    other = len(text) - sum(1 for _ in _SPACE.finditer(text)) - cjk
    return SPECIAL_TOKENS + cjk + -(-other // CHARS_PER_OTHER_TOKEN)


def task_numbers(texts: Sequence[str], items_per_task: int, tokens_per_task: int) -> list[int]:
    """The task (batch_no) of each text, in the texts' order. Texts are taken shortest first
    (by estimate; ties keep submission order), so each task holds texts of like length and its
    engine batches pad little, as if the whole job were sorted in one window. A task closes at
    items_per_task texts, or before the text that would take its estimated tokens past
    tokens_per_task (a task always holds at least one text, however long)."""
    estimates = [estimate_tokens(text) for text in texts]
    numbers = [0] * len(texts)
    task, items, tokens = 0, 0, 0
    for index in sorted(range(len(texts)), key=estimates.__getitem__):
        estimate = estimates[index]
        if items and (items == items_per_task or tokens + estimate > tokens_per_task):
            task, items, tokens = task + 1, 0, 0
        numbers[index] = task
        items, tokens = items + 1, tokens + estimate
    return numbers
