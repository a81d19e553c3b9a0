"""Cutting a job into tasks by count and by estimated tokens."""

from __future__ import annotations

from embedq_core.task_batches import estimate_tokens, task_numbers


def test_estimate_counts_each_cjk_character_and_four_other_characters_a_token() -> None:
    assert estimate_tokens("") == 2
    assert estimate_tokens("深度学习") == 2 + 4
    assert estimate_tokens("deep learning") == 2 + 3  # 12 letters, spaces not counted
    assert estimate_tokens("深度 learning!") == 2 + 2 + 3  # 9 other characters


def test_tasks_close_at_the_item_count() -> None:
    assert task_numbers(["a"] * 7, items_per_task=3, tokens_per_task=10**6) == [
        0, 0, 0, 1, 1, 1, 2,
    ]  # fmt: skip


def test_tasks_close_before_a_text_that_would_pass_the_token_budget() -> None:
    short, long = "短" * 8, "长" * 98  # 10 and 100 estimated tokens
    texts = [short, long, short, long]
    # Shortest first: both shorts and the first long (120 tokens), then the second long alone.
    assert task_numbers(texts, items_per_task=100, tokens_per_task=120) == [0, 0, 0, 1]


def test_texts_are_dealt_into_tasks_shortest_first_ties_in_submission_order() -> None:
    texts = ["长" * 40, "短", "中" * 10, "短短", "长" * 40]  # 42, 3, 12, 4, 42 tokens
    assert task_numbers(texts, items_per_task=2, tokens_per_task=10**6) == [1, 0, 1, 0, 2]
    assert task_numbers(texts, items_per_task=1, tokens_per_task=10**6) == [3, 0, 2, 1, 4]


def test_a_text_over_the_budget_alone_still_makes_a_task() -> None:
    assert task_numbers(["长" * 500, "短", "长" * 500], 100, 64) == [1, 0, 2]
    assert task_numbers([], 100, 64) == []
