"""A text the engine cannot embed fails alone, with its reason; the others get their vectors."""

from __future__ import annotations

import numpy as np
import pytest

from workers.delivery.isolation import embed_isolating
from workers.engine import EmbedResult, PreparedTexts


class StubEmbedder:
    """Embeds each text as [len(text), 1]; any call that includes a text with "💥" raises,
    the way an engine error on one input fails the whole call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

        self.runs: list[list[str]] = []

    def embed(self, texts: list[str]) -> EmbedResult:
        self.calls.append(texts)
        return self._result(texts)

    def run(self, prepared: PreparedTexts) -> EmbedResult:
        self.runs.append(list(prepared.texts))
        return self._result(list(prepared.texts))

    def _result(self, texts: list[str]) -> EmbedResult:
        if any("💥" in t for t in texts):
            raise RuntimeError("engine rejected input")
        vectors = np.array([[len(t), 1.0] for t in texts], dtype=np.float32)
        return EmbedResult(vectors, [len(t) > 5 for t in texts], [len(t) for t in texts])


def _prepared(texts: list[str]) -> PreparedTexts:
    """What Embedder.prepare returns, as far as the stub's run() reads it."""
    return PreparedTexts(tuple(texts), [], [], [])


def test_one_call_when_every_text_embeds() -> None:
    embedder = StubEmbedder()
    out = embed_isolating(embedder, [("a", "abc"), ("b", "abcdefg")])
    assert len(embedder.calls) == 1
    assert out.errors == {}
    assert out.vectors["a"][0].tolist() == [3.0, 1.0] and out.vectors["a"][1] is False
    assert out.vectors["b"][0].tolist() == [7.0, 1.0] and out.vectors["b"][1] is True


def test_a_failing_text_fails_alone_with_its_reason() -> None:
    embedder = StubEmbedder()
    out = embed_isolating(embedder, [("a", "abc"), ("bad", "x💥"), ("c", "hello")])
    assert set(out.vectors) == {"a", "c"}
    assert out.vectors["c"][0].tolist() == [5.0, 1.0]
    assert set(out.errors) == {"bad"}
    assert "RuntimeError: engine rejected input" in out.errors["bad"]
    # The whole batch once, then each text on its own.
    assert embedder.calls[0] == ["abc", "x💥", "hello"]
    assert sorted(map(tuple, embedder.calls[1:])) == [("abc",), ("hello",), ("x💥",)]


def test_nothing_to_embed_calls_nothing() -> None:
    embedder = StubEmbedder()
    assert embed_isolating(embedder, []).vectors == {}
    assert embedder.calls == []


def test_an_engine_that_fails_on_everything_fails_the_delivery() -> None:
    # Nothing embeds alone either: the input is not to blame, so no item is failed for it.
    with pytest.raises(RuntimeError, match="engine rejected input"):
        embed_isolating(StubEmbedder(), [("a", "💥a"), ("b", "💥b")])
    with pytest.raises(RuntimeError, match="engine rejected input"):
        embed_isolating(StubEmbedder(), [("a", "💥a")])


def test_texts_tokenised_ahead_run_without_embedding_again() -> None:
    embedder = StubEmbedder()
    out = embed_isolating(embedder, [("a", "abc"), ("b", "abcdefg")], _prepared(["abc", "abcdefg"]))
    assert embedder.runs == [["abc", "abcdefg"]] and embedder.calls == []
    assert out.vectors["b"][0].tolist() == [7.0, 1.0] and out.vectors["b"][1] is True


def test_texts_tokenised_ahead_still_isolate_a_failing_text() -> None:
    embedder = StubEmbedder()
    items = [("a", "abc"), ("bad", "x💥")]
    out = embed_isolating(embedder, items, _prepared(["abc", "x💥"]))
    assert embedder.runs == [["abc", "x💥"]]
    assert sorted(map(tuple, embedder.calls)) == [("abc",), ("x💥",)]
    assert set(out.vectors) == {"a"} and set(out.errors) == {"bad"}


def test_texts_prepared_for_other_items_are_refused() -> None:
    embedder = StubEmbedder()
    with pytest.raises(ValueError, match="other texts"):
        embed_isolating(embedder, [("a", "abc"), ("b", "xyz")], _prepared(["abc", "other"]))
    assert embedder.runs == [] and embedder.calls == []
