"""Every code block of the README and the docs is run by the suite or says why not."""

from __future__ import annotations

from collections import defaultdict

from tests.docs_examples import FIXTURES, SNIPPETS, all_examples, examples, pages


def test_every_code_block_is_marked_with_a_known_fixture_or_a_reason() -> None:
    unmarked, unknown = [], []
    for ex in all_examples():
        if ex.fixture is None and not (ex.skip_reason or "").strip():
            unmarked.append(ex.where)
        elif ex.fixture is not None and ex.fixture not in FIXTURES.get(ex.lang, set()):
            unknown.append(f"{ex.where}: {ex.lang} on {ex.fixture}")
    assert not unmarked, (
        f"add <!-- example: FIXTURE --> or <!-- example-skip: REASON -->: {unmarked}"
    )
    assert not unknown, f"no such fixture for the language: {unknown}"


def test_every_fence_names_its_language() -> None:
    bare = [ex.where for page in pages() for ex in examples(page) if not ex.lang]
    assert not bare, f"name the block's language (text for diagrams and output): {bare}"


def test_a_shared_snippet_runs_the_same_way_on_every_page() -> None:
    markers: dict[str, set[tuple[str | None, str | None]]] = defaultdict(set)
    for ex in all_examples():
        if ex.snippet:
            markers[ex.snippet].add((ex.fixture, ex.skip_reason))
    differing = {path: found for path, found in markers.items() if len(found) > 1}
    assert not differing, differing


def test_every_snippet_file_is_included_by_a_page() -> None:
    included = {ex.snippet for page in pages() for ex in examples(page) if ex.snippet}
    files = {str(p.relative_to(SNIPPETS)) for p in SNIPPETS.rglob("*") if p.is_file()}
    assert files - included == set(), files - included
    assert len(all_examples()) >= 40
