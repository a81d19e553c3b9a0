"""A text is cut by characters before it is tokenised, so a huge text costs what the model can
read of it; the ids and the truncation flag stay those of the whole text."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tokenizers import Tokenizer

from api.main import create_app
from embedq_core.settings import Settings
from embedq_core.task_batches import estimate_tokens
from embedq_core.text_limits import (
    CHARS_PER_TOKENIZER_CALL,
    chars_for_tokens,
    cut_text,
    slices_by_chars,
)
from ops.devstack.bundled_model import bundled_model_source
from workers.engine.tokenize import TextTokenizer

MAX_LENGTH = 32
WORDS = ["月亮", "代表", "我的心", "river", "mountains", "https://example.com/a/b?c=d", "x" * 60]


@pytest.fixture(scope="module")
def tokenizer_file() -> Path:
    return bundled_model_source() / "tokenizer.json"


def test_cut_text_says_whether_anything_but_whitespace_was_cut() -> None:
    assert cut_text("abc", 3) == ("abc", False)
    assert cut_text("abc   \n", 3) == ("abc", False)
    assert cut_text("abc  d", 3) == ("abc", True)
    assert chars_for_tokens(512) == 512 * 101


def test_slices_hold_a_bounded_number_of_characters() -> None:
    texts = ["a" * 40, "b" * 40, "c" * 30, "d" * 200, "e"]
    assert (
        [list(s) for s in slices_by_chars(texts, 100)]
        == [
            texts[:2],
            texts[2:3],
            texts[3:4],  # longer than a slice: alone
            texts[4:],
        ]
    )
    assert [list(s) for s in slices_by_chars([], 100)] == []


def test_the_tokenizer_never_sees_more_than_the_model_can_read(
    tokenizer_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    original = Tokenizer.encode_batch

    def spy(self: Tokenizer, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        seen.append(texts)
        return original(self, texts, *args, **kwargs)

    tokenizer = TextTokenizer(tokenizer_file, MAX_LENGTH)
    monkeypatch.setattr(Tokenizer, "encode_batch", spy)
    huge = "月亮代表我的心 " * 400_000  # 3.2 M characters
    [result] = tokenizer.tokenize([huge])
    assert result.truncated and len(result.ids) == MAX_LENGTH
    assert max(len(t) for call in seen for t in call) <= chars_for_tokens(MAX_LENGTH)
    many = tokenizer.tokenize(["river " * 1000] * 200)
    assert all(t.truncated for t in many)
    assert max(sum(len(t) for t in call) for call in seen[1:]) <= CHARS_PER_TOKENIZER_CALL


def test_ids_and_flags_match_tokenising_the_whole_text(tokenizer_file: Path) -> None:
    reference = Tokenizer.from_file(str(tokenizer_file))
    reference.no_padding()
    reference.enable_truncation(max_length=MAX_LENGTH)
    rng = random.Random(7)
    texts = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3000))) for _ in range(200)
    ] + ["a" + " " * 10_000]  # only whitespace past the cut: not truncated
    ours = TextTokenizer(tokenizer_file, MAX_LENGTH).tokenize(texts)
    for text, got, want in zip(texts, ours, reference.encode_batch(texts), strict=True):
        assert got.ids == want.ids, text[:80]
        assert got.truncated == bool(want.overflowing), text[:80]


def test_the_token_estimate_counts_cjk_one_each_and_skips_whitespace() -> None:
    assert estimate_tokens("中" * 10) - estimate_tokens("中") == 9
    assert estimate_tokens("中 \n\t") == estimate_tokens("中")


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/v1/embeddings", {"model": "m", "input": "a" * 11}, ["body", "input"]),
        ("/v1/embeddings", {"model": "m", "input": ["ok", "a" * 11]}, ["body", "input", 1]),
        (
            "/v1/collections/docs/jobs",
            {"items": [{"id": "1", "text": "a" * 11}]},
            ["body", "items", 0, "text"],
        ),
        ("/v1/collections/docs/search", {"query": "a" * 11}, ["body", "query"]),
    ],
)
def test_a_text_over_the_limit_gets_a_422_naming_it(
    path: str, body: dict[str, Any], loc: list[str | int]
) -> None:
    # Refused before any database or broker is asked (none is reachable at these URLs).
    settings = Settings(
        database_url="postgresql://x:y@127.0.0.1:1/none",
        redis_url="redis://127.0.0.1:1/0",
        auth_required=False,
        max_text_chars=10,
    )
    with TestClient(create_app(settings)) as client:
        response = client.post(path, json=body)
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == loc and error["type"] == "too_long"
        assert "11 characters; at most 10" in error["msg"]
        limits = client.get("/openapi.json").json()["components"]["schemas"]
    assert limits["ItemIn"]["properties"]["text"]["maxLength"] == 10
    assert limits["SearchIn"]["properties"]["query"]["maxLength"] == 10


def test_the_per_text_limit_is_a_setting_with_a_sane_default() -> None:
    default = Settings.model_fields["max_text_chars"].default
    assert default >= chars_for_tokens(8192)  # long enough for any model's whole input
