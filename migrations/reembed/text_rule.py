"""Which rows have text to embed: one predicate for the backfill, status, verify, cutover and
the partial index of pending rows, so they can never disagree about a row.

A row has no text when its text is NULL, empty, or only whitespace. Whitespace is what
Python's `str.isspace` (and so the API's own `strip()` check) calls whitespace, which
includes the ideographic space U+3000 common in Chinese text; Postgres's default `btrim`
strips only ' '. Such rows get no new vector and are reported as "no text".
"""

from __future__ import annotations

from psycopg import sql

# Every code point for which str.isspace() is true (tests/unit checks this stays so).
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def has_text(column: str) -> sql.Composed:
    """`column` holds something to embed: not NULL and not only whitespace."""
    name = sql.Identifier(column)
    return sql.SQL("({name} IS NOT NULL AND btrim({name}, {ws}) <> '')").format(
        name=name, ws=sql.Literal(WHITESPACE)
    )


def no_text(column: str) -> sql.Composed:
    """The complement of has_text: NULL, empty or whitespace only."""
    return sql.SQL("(NOT {})").format(has_text(column))
