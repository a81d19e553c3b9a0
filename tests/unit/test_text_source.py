"""A vectorizer's text: templates parsed, rendered in SQL, and the trigger's conditions."""

from __future__ import annotations

import pytest

from migrations.reembed.state import Migration, stored_template
from migrations.reembed.text_source import TemplateError, TemplatePart, TextSource, split_template


def test_templates_split_into_literals_and_columns() -> None:
    assert split_template("{title}\\n{lyrics}") == [
        TemplatePart(column="title"),
        TemplatePart(literal="\n"),
        TemplatePart(column="lyrics"),
    ]
    assert split_template('Title: {"Song Title"} {{x}}\\t\\\\') == [
        TemplatePart(literal="Title: "),
        TemplatePart(column='"Song Title"'),
        TemplatePart(literal=" {x}\t\\"),
    ]
    # A quoted name may hold a brace.
    assert split_template('{"a}b"}') == [TemplatePart(column='"a}b"')]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("plain words", "names no column"),
        ("{title", "unclosed"),
        ("{}", "empty column name"),
        ("{a} }", "unmatched"),
    ],
)
def test_bad_templates_say_where(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        split_template(template)


def test_one_column_renders_as_itself() -> None:
    source = TextSource(("lyricsText",))
    assert source.expression().as_string(None) == '"lyricsText"'
    assert source.update_of().as_string(None) == '"lyricsText"'
    assert source.changed().as_string(None) == 'OLD."lyricsText" IS DISTINCT FROM NEW."lyricsText"'


def test_a_template_renders_nulls_as_empty_and_has_text_if_any_column_has() -> None:
    parts = (TemplatePart(column="title"), TemplatePart(literal="\n"), TemplatePart(column="body"))
    source = TextSource(("title", "body"), parts)
    assert source.expression("t").as_string(None) == (
        "concat(coalesce(t.\"title\"::text, ''), '\n', coalesce(t.\"body\"::text, ''))"
    )
    has = source.has_text().as_string(None)
    assert has.startswith('(("title" IS NOT NULL') and ' OR ("body" IS NOT NULL' in has
    assert source.changed().as_string(None) == (
        'ROW(OLD."title", OLD."body") IS DISTINCT FROM ROW(NEW."title", NEW."body")'
    )


def test_a_stored_template_gives_back_its_source() -> None:
    parts = (TemplatePart(column="Title"), TemplatePart(literal=" - "), TemplatePart(column="b"))
    stored = stored_template('{"Title"} - {b}', parts)
    m = Migration(
        name="v", table_schema="public", table_name="t", id_column="id", id_type="bigint",
        text_column="Title", legacy_column="e", new_column="e", manifest_id="m", dimension=3,
        chunk_size=10, status="running", phase="keyset", checkpoint=None, cut_over=False,
        rows_total=0, rows_embedded=0, chunks_done=0, step_token=None, error=None,
        kind="vectorizer", text_columns=["Title", "b"], text_template=stored,
    )  # fmt: skip
    assert m.text_source == TextSource(("Title", "b"), parts)
    assert m.template_written == '{"Title"} - {b}'
    assert m.queued_column == "e_queued_at" and m.columns.new == m.columns.legacy == "e"
    assert m.columns.manifest == "e_manifest" and m.is_vectorizer
