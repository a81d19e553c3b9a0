"""What a row's text is: one column, or a template over several (a vectorizer's
`--template '{title}\\n{lyrics}'`, pgai's formatting template), rendered in SQL so the
backfill, the write check, the trigger and the pending-rows index all read the same text.

A template names columns in braces, written as in SQL (`{title}`, `{"lyricsText"}`); `{{` and
`}}` are literal braces and `\\n`, `\\t` and `\\\\` are a newline, a tab and a backslash (a shell
user cannot easily type a newline). A NULL column renders as empty text. A row has text when
any of its template's columns has text (text_rule.py), so a template's own words never make an
empty row embeddable.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from migrations.reembed.text_rule import has_text

ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


class TemplateError(ValueError):
    """A template that cannot be read; the message says where."""


@dataclass(frozen=True)
class TemplatePart:
    """Literal text, or a column (as written in the template, before parse_ident)."""

    literal: str = ""
    column: str | None = None


def split_template(template: str) -> list[TemplatePart]:
    """The template's literal runs and column references, in order."""
    parts: list[TemplatePart] = []
    literal: list[str] = []
    i = 0
    while i < len(template):
        char = template[i]
        if char == "\\" and i + 1 < len(template) and template[i + 1] in ESCAPES:
            literal.append(ESCAPES[template[i + 1]])
            i += 2
        elif template.startswith("{{", i) or template.startswith("}}", i):
            literal.append(char)
            i += 2
        elif char == "{":
            end = _closing_brace(template, i)
            if literal:
                parts.append(TemplatePart(literal="".join(literal)))
                literal = []
            parts.append(TemplatePart(column=template[i + 1 : end].strip()))
            i = end + 1
        elif char == "}":
            raise TemplateError(f"unmatched '}}' at character {i + 1}: write '}}}}' for a brace")
        else:
            literal.append(char)
            i += 1
    if literal:
        parts.append(TemplatePart(literal="".join(literal)))
    if not any(p.column for p in parts):
        raise TemplateError("the template names no column: write columns as {name}")
    return parts


def _closing_brace(template: str, start: int) -> int:
    quoted = False
    for j in range(start + 1, len(template)):
        if template[j] == '"':
            quoted = not quoted
        elif template[j] == "}" and not quoted:
            if j == start + 1:
                raise TemplateError(f"empty column name at character {start + 1}")
            return j
    raise TemplateError(f"unclosed '{{' at character {start + 1}")


@dataclass(frozen=True)
class TextSource:
    """A row's text: `columns` (exact names) and, for a template, its parts with each
    column reference resolved to an exact name (None: the text is columns[0])."""

    columns: tuple[str, ...]
    parts: tuple[TemplatePart, ...] | None = None

    def expression(self, row: str | None = None) -> sql.Composable:
        """The text as SQL (columns qualified by `row`, e.g. NEW, when given)."""
        if self.parts is None:
            return self._column(self.columns[0], row)
        pieces: list[sql.Composable] = []
        for part in self.parts:
            if part.column is None:
                pieces.append(sql.Literal(part.literal))
            else:
                pieces.append(
                    sql.SQL("coalesce({}::text, '')").format(self._column(part.column, row))
                )
        return sql.SQL("concat({})").format(sql.SQL(", ").join(pieces))

    def has_text(self) -> sql.Composable:
        """The row has something to embed: one of its columns has text (text_rule.py)."""
        if len(self.columns) == 1:
            return has_text(self.columns[0])
        return sql.SQL("({})").format(sql.SQL(" OR ").join(has_text(c) for c in self.columns))

    def no_text(self) -> sql.Composable:
        """The complement of has_text."""
        return sql.SQL("(NOT {})").format(self.has_text())

    def changed(self) -> sql.Composable:
        """An UPDATE trigger's WHEN: one of the text's columns changed."""
        old = sql.SQL(", ").join(self._column(c, "OLD") for c in self.columns)
        new = sql.SQL(", ").join(self._column(c, "NEW") for c in self.columns)
        if len(self.columns) == 1:
            return sql.SQL("{} IS DISTINCT FROM {}").format(old, new)
        return sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(old, new)

    def update_of(self) -> sql.Composable:
        """The column list of `BEFORE UPDATE OF ...`: other columns never fire it."""
        return sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)

    @staticmethod
    def _column(name: str, row: str | None) -> sql.Composable:
        if row is None:
            return sql.Identifier(name)
        return sql.SQL("{}.{}").format(sql.SQL(row), sql.Identifier(name))
