"""Rules of the re-embedding migration that need no database."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import cast

import pytest

from embedq_core.manifest import ModelManifest
from embedq_core.settings import Settings
from migrations.reembed.attempts import MAX_RETRY_DELAY_S, describe, retry_delay_s
from migrations.reembed.backfill import StepOptions
from migrations.reembed.locking import LockPolicy
from migrations.reembed.planning import draft_migration
from migrations.reembed.target import (
    MIGRATION_NAME_RE,
    Target,
    TargetError,
    check_identifier_length,
    default_migration_name,
)
from migrations.reembed.text_rule import WHITESPACE


def test_whitespace_is_what_python_and_the_api_strip() -> None:
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    assert every == WHITESPACE


def test_default_migration_names_are_plain_whatever_the_table() -> None:
    for table, expected in [
        ("songs", "songs_reembed"),
        ("SongLyrics", "songlyrics_reembed"),
        ("Song Lyrics", "song_lyrics_reembed"),
        ("2024 songs", "t_2024_songs_reembed"),
        ("歌曲", "t_reembed"),
    ]:
        assert default_migration_name(table) == expected
        assert MIGRATION_NAME_RE.match(expected)
    assert MIGRATION_NAME_RE.match(default_migration_name("x" * 200))


def test_names_postgres_would_truncate_are_refused() -> None:
    assert check_identifier_length("column", "a" * 63) == "a" * 63
    try:
        check_identifier_length("column", "歌" * 22)  # 66 bytes in UTF-8
    except TargetError as exc:
        assert "longer than 63 bytes" in str(exc)
    else:
        raise AssertionError("a 66-byte name was accepted")


def test_retry_delays_double_up_to_a_minute() -> None:
    assert [retry_delay_s(n, 2.0) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert retry_delay_s(30, 2.0) == MAX_RETRY_DELAY_S
    assert describe(RuntimeError("row 40\n  is held")) == "RuntimeError: row 40 is held"


def test_options_come_from_the_settings() -> None:
    settings = Settings(
        reembed_max_step_attempts=7,
        reembed_step_retry_delay_s=0.5,
        reembed_max_catchup_passes=2,
        reembed_lock_timeout_s=1.5,
        reembed_lock_retry_timeout_s=30,
    )
    step = StepOptions.from_settings(settings)
    assert (step.max_attempts, step.retry_delay_s, step.max_catchup_passes) == (7, 0.5, 2)
    lock = LockPolicy.from_settings(settings)
    assert (lock.lock_timeout_s, lock.retry_timeout_s) == (1.5, 30)


def _target(**column_types: str) -> Target:
    types = {"id": "bigint", "body": "text", "embedding": "vector(312)", **column_types}
    return Target(
        schema="public",
        table="songs",
        id_column="id",
        id_type="bigint",
        text_column="body",
        legacy_column="embedding",
        legacy_dimension=312,
        columns=frozenset(types),
        column_types=types,
    )


def test_new_column_must_not_be_an_existing_column_of_another_kind() -> None:
    manifest = cast(ModelManifest, SimpleNamespace(manifest_id="bge", dimension=1024, sparse=False))
    # A new name, or a vector column of the right size left by an earlier attempt: accepted.
    assert draft_migration(_target(), "m", "embedding_1024", manifest, 64).new_column
    resumed = _target(embedding_1024="vector(1024)", embedding_1024_manifest="text")
    assert draft_migration(resumed, "m", "embedding_1024", manifest, 64).dimension == 1024
    # The id, text or legacy column, or one of another type: refused before anything is written.
    for column, why in [
        ("id", "the table's id column"),
        ("body", "the table's text column"),
        ("embedding", "the table's legacy vector column"),
    ]:
        with pytest.raises(TargetError, match=why):
            draft_migration(_target(), "m", column, manifest, 64)
    with pytest.raises(TargetError, match=r"notes already exists as text, not vector\(1024\)"):
        draft_migration(_target(notes="text"), "m", "notes", manifest, 64)
    with pytest.raises(TargetError, match=r"already exists as vector\(768\), not vector\(1024\)"):
        draft_migration(_target(v="vector(768)"), "m", "v", manifest, 64)
    with pytest.raises(TargetError, match="v_manifest already exists as integer, not text"):
        draft_migration(_target(v="vector(1024)", v_manifest="integer"), "m", "v", manifest, 64)
