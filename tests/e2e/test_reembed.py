"""The re-embedding migration on a live legacy table: 312-d ALBERT-shaped vectors → 1024-d
BGE-shaped ones, with kills, concurrent writes, long readers, a failing step, cutover/rollback
and verification.

Every table is shaped the way ORMs make them: a mixed-case, spaced name in a non-public schema
("Shop Data"."Song Lyrics ..."), camelCase columns, rows whose text is empty, whitespace only
or NULL, duplicate texts, and gaps in the ids.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from psycopg import sql

from migrations.reembed import attempts
from migrations.reembed.progress import progress
from migrations.reembed.target import TargetError, resolve_target
from tests.e2e.reembed_harness import (
    ID,
    NEW,
    NO_TEXT,
    ROWS,
    SCHEMA,
    TEXT,
    VECTOR,
    ReembedEnv,
    Traffic,
    add_new_columns,
    as_typed,
    assert_exactly_right,
    column_names,
    ddl_beside_long_reader,
    expected_vectors,
    has_text,
    install_audit,
    make_legacy_table,
    start_args,
    table_id,
)
from tests.model_factory import song_texts
from tests.support import ServiceHandle


def test_plan_counts_rows_estimates_time_and_shows_ddl(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    rows = make_legacy_table(env, "Song Lyrics Plan", song_texts(zh_sentences, 500), albert)
    out = env.cli("reembed", "plan", *start_args(env, "Song Lyrics Plan", "plan")).stdout
    assert f"rows: {len(rows)}" in out
    assert "rows/s per worker" in out and "estimated backfill" in out
    assert 'ALTER TABLE "Shop Data"."Song Lyrics Plan" ADD COLUMN IF NOT EXISTS' in out
    assert '"Embedding_1024" vector(1024)' in out
    assert "USING hnsw" in out and "CREATE TRIGGER" in out
    assert NEW not in column_names(env, "Song Lyrics Plan")  # plan changes nothing
    # Unquoted names fold to lower case, as in SQL; the error says how to write the real one.
    args = start_args(env, "Song Lyrics Plan", "plan")
    args[args.index(f'"{TEXT}"')] = TEXT
    wrong = env.cli("reembed", "plan", *args, check=False)
    assert wrong.returncode != 0 and 'did you mean "lyricsText"' in wrong.stderr


BAD_NAMES = ["songs; drop table x", 'songs"--', "1songs", "a b", '""', "a.b.c"]


def test_a_not_null_vector_column_is_refused_with_the_statement_to_run(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    """ORM-made tables declare the vector NOT NULL: text-only writers would fail after start
    (and after cutover, on the renamed legacy column). plan names the exact fix."""
    make_legacy_table(env, "Song Lyrics Not Null", song_texts(zh_sentences, 10), albert)
    with env.connect() as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(
                table_id("Song Lyrics Not Null"), sql.Identifier(VECTOR)
            )
        )
    args = [
        *("reembed", "plan", "--table", as_typed("Song Lyrics Not Null"), "--id", f'"{ID}"'),
        *("--text", f'"{TEXT}"', "--vector", f'"{VECTOR}"', "--model", str(env.model_dir)),
    ]
    refused = env.cli(*args, check=False)
    assert refused.returncode != 0
    statement = (
        f'ALTER TABLE "{SCHEMA}"."Song Lyrics Not Null" ALTER COLUMN "{VECTOR}" DROP NOT NULL;'
    )
    assert statement in refused.stderr.replace("\n", " "), refused.stderr
    with env.connect() as conn:
        conn.execute(statement)
    assert env.cli(*args).returncode == 0


def test_names_are_parsed_as_sql_never_interpolated(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    make_legacy_table(env, "Song Lyrics Names", song_texts(zh_sentences, 10), albert)
    good = {"table": as_typed("Song Lyrics Names"), "id": f'"{ID}"', "text": f'"{TEXT}"'}
    good["vector"] = f'"{VECTOR}"'
    with env.connect() as conn:
        target = resolve_target(conn, good["table"], good["id"], good["text"], good["vector"])
        assert (target.schema, target.table, target.text_column) == (
            SCHEMA,
            "Song Lyrics Names",
            TEXT,
        )
        for bad in BAD_NAMES:
            for kind in good:
                names = {**good, kind: bad}
                with pytest.raises(TargetError, match=r"not a valid SQL name|dotted parts"):
                    resolve_target(
                        conn, names["table"], names["id"], names["text"], names["vector"]
                    )
        # A quoted name may hold anything: it is a name, looked up, never run.
        with pytest.raises(TargetError, match="does not exist"):
            resolve_target(conn, '"x; DROP TABLE songs"', *list(good.values())[1:])
    result = env.cli(
        "reembed", "plan", "--table", "a b", "--id", "id", "--text", "t", "--vector", "v",
        "--model", str(env.model_dir), check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "not a valid SQL name" in result.stderr


def test_kill_mid_migration_resumes_without_skipping_or_repeating_rows(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    name = "Song Lyrics Kill"
    rows = make_legacy_table(env, name, song_texts(zh_sentences, ROWS), albert)
    with_text = [i for i, text in rows.items() if has_text(text)]
    audit = install_audit(env, name)
    worker = env.start_worker()
    env.cli("reembed", "start", *start_args(env, name, "kill"))
    env.wait(lambda: env.state("kill")["chunks_done"] >= 3, "three chunks")
    worker.kill()  # mid-migration: the in-flight chunk's transaction is rolled back
    killed_at = env.state("kill")["chunks_done"]
    env.start_worker()
    env.wait(lambda: env.state("kill")["phase"] == "following", "backfill and index")
    assert env.state("kill")["chunks_done"] >= killed_at
    with env.connect() as conn:
        per_row = dict(
            conn.execute(
                sql.SQL("SELECT id, count(*) FROM {} GROUP BY id").format(audit)
            ).fetchall()
        )
        chunk_rows = conn.execute(
            "SELECT sum(rows_read) FROM reembed_chunks WHERE migration = 'kill'"
        ).fetchone()
        index_valid = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = 'embedq_kill_hnsw'"
        ).fetchone()
        has_vector = conn.execute(
            sql.SQL("SELECT {} FROM {} WHERE {} IS NOT NULL").format(
                sql.Identifier(ID), table_id(name), sql.Identifier(NEW)
            )
        ).fetchall()
    # Each row with text written exactly once; rows without text never.
    assert sorted(per_row) == sorted(with_text) and set(per_row.values()) == {1}
    assert chunk_rows == (len(with_text),)  # the committed chunk log covers each row once
    assert index_valid == (True,)
    assert sorted(r[0] for r in has_vector) == sorted(with_text)
    # The stored vectors are what the model computes for each row's text.
    verify = json.loads(env.cli("reembed", "verify", "kill", "--model", str(env.model_dir)).stdout)
    assert verify["ok"] and verify["missing"] == 0 and verify["sample_min_cos"] >= 0.9999
    assert (verify["rows_with_text"], verify["rows_no_text"]) == (len(with_text), len(NO_TEXT))


def test_rows_written_during_the_backfill_end_up_exactly_right(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    name = "Song Lyrics Live"
    table = table_id(name)
    make_legacy_table(env, name, song_texts(zh_sentences, ROWS), albert)
    env.start_worker()
    env.cli("reembed", "start", *start_args(env, name, "live"))
    # A steady stream of inserts for the whole backfill (~10 a second): catch-up must still end.
    steady = Traffic(env, name, first_id=20_000_000, reads=False, pause_s=0.1)
    steady.start()
    env.wait(lambda: env.state("live")["chunks_done"] >= 2, "backfill under way")
    insert = sql.SQL("INSERT INTO {} ({}, {}) VALUES (%s, %s)").format(
        table, sql.Identifier(ID), sql.Identifier(TEXT)
    )
    with env.connect() as conn:
        checkpoint = int(env.state("live")["checkpoint"] or 0)
        # Inserts behind the checkpoint (odd ids) and beyond the end, some without text.
        new_rows: list[tuple[int, str | None]] = [
            (2 * i + 1, f"新歌（第{i}首）") for i in range(1, 60)
        ]
        new_rows += [(100_000 + i, f"新版（第{i}首）") for i in range(40)]
        new_rows += [(121, "  "), (123, None), (100_100, "\u3000")]
        conn.cursor().executemany(insert, new_rows)
        # Text changes behind and ahead of the checkpoint; some texts become whitespace.
        changed = [2 * i for i in range(1, 120, 2)] + [2 * i for i in range(2000, 2060)]
        conn.execute(
            sql.SQL("UPDATE {t} SET {c} = {c} || '（改）' WHERE {i} = ANY(%s)").format(
                t=table, c=sql.Identifier(TEXT), i=sql.Identifier(ID)
            ),
            (changed,),
        )
        emptied = [2 * i for i in (3, 2500)]
        conn.execute(
            sql.SQL("UPDATE {} SET {} = ' ' WHERE {} = ANY(%s)").format(
                table, sql.Identifier(TEXT), sql.Identifier(ID)
            ),
            (emptied,),
        )
        deleted = [2 * i for i in range(300, 400)] + [2 * i for i in range(2800, 2850)]
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(table, sql.Identifier(ID)),
            (deleted,),
        )
    assert checkpoint > 0
    with env.connect() as writer, writer.transaction():
        # An open write transaction: CREATE INDEX CONCURRENTLY must wait for it. Meanwhile the
        # only worker keeps embedding new rows: the build does not occupy it.
        writer.execute(insert, (30_000_000, "等待中的新歌（第1首）"))
        env.wait(
            lambda: env.progress("live")["index_phase"] == "waiting for writers before build",
            "the index build to wait for the open writer",
        )
        before = steady.inserted[-1]
        env.wait(lambda: env.vector_of(name, NEW, before) is not None, "a row embedded meanwhile")
        assert env.state("live")["phase"] == "index"
    env.wait(lambda: env.state("live")["phase"] == "following", "the index after the writer")
    assert steady.alive()  # the phase moved on while inserts kept coming
    steady.stop()
    env.wait(lambda: env.progress("live")["rows_pending"] == 0, "the last inserts embedded")
    rows = assert_exactly_right(env, name)
    assert not set(rows) & set(deleted)
    no_text_now = {*emptied, 121, 123, 100_100}
    assert {i for i in no_text_now if rows[i][1] is None} == no_text_now
    status = env.status("live", exact=True)
    assert status["rows_no_text"] == len(NO_TEXT) + 5
    assert status["rows_done"] + status["rows_no_text"] == status["rows_total"] == len(rows)
    # Without --exact the counts are those taken when the following phase began (before the
    # last inserts): served from the migration's row, with the live pending count.
    kept = env.status("live")
    assert kept["counted_at"] is not None and kept["rows_pending"] == 0
    assert kept["rows_total"] <= status["rows_total"]


def _top_ids(conn: psycopg.Connection[Any], query: np.ndarray, column: str = VECTOR) -> list[int]:
    # What a reader runs, before and after cutover alike.
    return [
        r[0]
        for r in conn.execute(
            sql.SQL("SELECT {} FROM {} ORDER BY {} <#> %s LIMIT 5").format(
                sql.Identifier(ID), table_id("Song Lyrics Cut"), sql.Identifier(column)
            ),
            (query,),
        ).fetchall()
    ]


def test_cutover_rollback_cutover_beside_long_readers_and_writers(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    name = "Song Lyrics Cut"
    table = table_id(name)
    texts = song_texts(zh_sentences, 600)
    make_legacy_table(env, name, texts, albert)
    env.start_worker()
    early = env.cli("reembed", "cutover", "cut", check=False)
    assert early.returncode != 0  # no such migration yet
    traffic = Traffic(env, name, first_id=40_000_000)
    traffic.start()
    out = ddl_beside_long_reader(
        env, name, traffic, "reembed", "start", *start_args(env, name, "cut")
    )
    assert "started cut" in out
    env.wait(lambda: env.state("cut")["phase"] == "following", "backfill and index")
    legacy_query = albert([texts[10]])[0]
    new_query = expected_vectors(env, [texts[10]])[0]
    with env.connect() as conn:
        assert _top_ids(conn, legacy_query)[0] == 22

    # Rows without text and the product's steady inserts do not hold cutover up: no --force.
    ddl_beside_long_reader(env, name, traffic, "reembed", "cutover", "cut")
    with env.connect() as conn:
        assert _top_ids(conn, new_query)[0] == 22
        with pytest.raises(psycopg.errors.DataException):  # 312-d queries now fail loudly
            _top_ids(conn, legacy_query)
        # So does a writer still writing 312-d vectors (the runbook says: stop writing them).
        with pytest.raises(psycopg.errors.DataException, match="expected 1024 dimensions"):
            conn.execute(
                sql.SQL("INSERT INTO {} ({}, {}, {}) VALUES (%s, %s, %s)").format(
                    table, sql.Identifier(ID), sql.Identifier(TEXT), sql.Identifier(VECTOR)
                ),
                (50_000_000, "旧的写法", legacy_query),
            )
        conn.execute("SET enable_seqscan = off")  # 600 rows: show the index serves the query
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                sql.SQL("EXPLAIN SELECT 1 FROM {} ORDER BY {} <#> %s LIMIT 5").format(
                    table, sql.Identifier(VECTOR)
                ),
                (new_query,),
            )
        )
        assert "embedq_cut_hnsw" in plan
        # After cutover the trigger follows the renamed column: a text change is re-embedded.
        conn.execute(
            sql.SQL("UPDATE {} SET {} = '改过的歌（第1首）' WHERE {} = 2").format(
                table, sql.Identifier(TEXT), sql.Identifier(ID)
            )
        )
    # Text-only writes keep coming; the following phase embeds them into the new column.
    after_cutover = traffic.inserted[-1]
    env.wait(lambda: env.vector_of(name, VECTOR, after_cutover) is not None, "a new row embedded")
    env.wait(lambda: env.vector_of(name, VECTOR, 2) is not None, "the changed row re-embedded")
    traffic.stop()
    env.wait(lambda: env.progress("cut")["rows_pending"] == 0, "the last writes embedded")
    assert_exactly_right(env, name, VECTOR)

    env.cli("reembed", "rollback", "cut")
    with env.connect() as conn:
        assert _top_ids(conn, legacy_query)[0] == 22
    # Rows written after cutover have no ALBERT vector to go back to (the runbook says so).
    assert env.vector_of(name, VECTOR, after_cutover) is None
    env.cli("reembed", "cutover", "cut")
    with env.connect() as conn:
        assert _top_ids(conn, new_query)[0] == 22
    assert {VECTOR, "Embedding_legacy", "Embedding_manifest"} <= column_names(env, name)

    env.cli("reembed", "finalize", "cut", "--yes")
    with env.connect() as conn:
        assert _top_ids(conn, new_query)[0] == 22
    assert "Embedding_legacy" not in column_names(env, name)


def _refuse_writes(env: ReembedEnv, name: str, when: str, errcode: str) -> None:
    """The product's own trigger refuses the new vector of rows matching `when`."""
    hold = table_id(f"{name} hold")
    with env.connect() as conn:
        add_new_columns(conn, name)
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " RAISE EXCEPTION 'row % is under legal hold', NEW.{} USING ERRCODE = {}; END $$"
            ).format(hold, sql.Identifier(ID), sql.Literal(errcode))
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER hold BEFORE UPDATE OF {} ON {} FOR EACH ROW"
                " WHEN ({}) EXECUTE FUNCTION {}()"
            ).format(sql.Identifier(NEW), table_id(name), sql.SQL(when), hold)
        )


def test_a_row_the_table_refuses_is_parked_and_the_rest_goes_on(
    env: ReembedEnv, albert: Any, zh_sentences: list[str]
) -> None:
    name = "Song Lyrics Hold"
    make_legacy_table(env, name, song_texts(zh_sentences, 300), albert)
    _refuse_writes(env, name, f'NEW."{ID}" = 40', "raise_exception")
    env.start_worker()
    env.cli("reembed", "start", *start_args(env, name, "holds"))
    env.wait(lambda: env.progress("holds")["rows_parked"] == 1, "row 40 parked")
    env.wait(lambda: env.state("holds")["phase"] == "following", "the rest embedded")
    status = env.status("holds")
    assert (status["status"], status["rows_pending"], status["rows_retrying"]) == ("running", 1, 0)
    assert env.vector_of(name, NEW, 40) is None and env.vector_of(name, NEW, 42) is not None
    with env.connect() as conn:
        error = conn.execute(
            "SELECT attempts, parked, error FROM reembed_row_failures WHERE migration = 'holds'"
        ).fetchone()
    assert error is not None and error[:2] == (3, True) and "row 40 is under legal hold" in error[2]

    with env.connect() as conn:  # the cause fixed, the parked row gets a fresh budget
        conn.execute(sql.SQL("DROP TRIGGER hold ON {}").format(table_id(name)))
    env.cli("reembed", "resume", "holds", "--retry-parked")
    env.wait(lambda: env.progress("holds")["rows_pending"] == 0, "row 40 embedded")
    assert env.progress("holds")["rows_parked"] == 0
    assert_exactly_right(env, name)


def test_a_step_that_always_fails_ends_failed_with_its_error(
    env: ReembedEnv, albert: Any, zh_sentences: list[str], services: ServiceHandle
) -> None:
    """An error about the table rather than a row (here a trigger raising "permission
    denied" on every write) fails the step, which is retried, then fails the migration."""
    name = "Song Lyrics Fail"
    make_legacy_table(env, name, song_texts(zh_sentences, 300), albert)
    _refuse_writes(env, name, "true", "insufficient_privilege")
    env.start_worker()
    env.cli("reembed", "start", *start_args(env, name, "fails"))
    env.wait(lambda: env.state("fails")["status"] == "failed", "the migration to fail")
    status = env.status("fails")
    assert (status["status"], status["step_attempts"], status["rows_embedded"]) == ("failed", 3, 0)
    assert "failed 3 times" in status["error"] and "under legal hold" in status["error"]
    assert status["rows_parked"] == status["rows_retrying"] == 0
    api = services.get("/v1/reembed/fails").json()
    assert (api["status"], api["error"]) == ("failed", status["error"])
    assert "failed" in env.cli("reembed", "status", "fails").stdout
    with env.connect() as conn:  # an attempt in progress (it holds the step lock) hasn't failed
        assert attempts.try_lock(conn, "step_attempts", "fails")
        assert env.progress("fails")["step_attempts"] == 2
        attempts.unlock(conn, "step_attempts", "fails")
    assert env.progress("fails")["step_attempts"] == 3

    with env.connect() as conn:  # the cause fixed, resume starts over with a fresh budget
        conn.execute(sql.SQL("DROP TRIGGER hold ON {}").format(table_id(name)))
    env.cli("reembed", "resume", "fails")
    env.wait(lambda: env.state("fails")["phase"] == "following", "completion after resume")
    status = env.status("fails")
    assert (status["status"], status["error"], status["step_attempts"]) == ("running", None, 0)
    assert_exactly_right(env, name)


def test_pause_resume_status_api_and_metrics(
    env: ReembedEnv, albert: Any, zh_sentences: list[str], services: ServiceHandle
) -> None:
    rows = make_legacy_table(env, "Song Lyrics Paused", song_texts(zh_sentences, ROWS), albert)
    env.start_worker()
    env.cli("reembed", "start", *start_args(env, "Song Lyrics Paused", "paused"))
    env.wait(lambda: env.state("paused")["chunks_done"] >= 1, "first chunk")
    # pause waits for a chunk in progress to commit (it takes the row lock), so nothing moves
    # after it returns; the checks below take seconds, then show nothing did.
    env.cli("reembed", "pause", "paused")
    frozen = env.state("paused")["chunks_done"]
    status = env.status("paused")
    assert status["status"] == "paused" and status["table"] == '"Shop Data"."Song Lyrics Paused"'
    assert 0 < status["rows_done"] < status["rows_total"] == len(rows)
    assert status["rows_no_text"] == len(NO_TEXT)
    assert status["rate_rows_per_s"] > 0 and status["eta_s"] > 0

    api = services.get("/v1/reembed/paused").json()
    assert (api["rows_total"], api["status"], api["rows_no_text"]) == (len(rows), "paused", 8)
    assert api["pending_estimated"] and api["rows_pending"] == status["rows_pending"]
    # Status reads none of the product's table but pending rows behind the checkpoint, through
    # the migration's partial index (none here). The planner is steered off sequential scans,
    # as it would be on a table of millions of rows: on 600 it would read them all, cheaply.
    with env.connect() as conn, conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        progress(conn, "paused")
        read = conn.execute(
            "SELECT seq_tup_read, idx_tup_fetch FROM pg_stat_xact_user_tables"
            " WHERE schemaname = 'Shop Data' AND relname = 'Song Lyrics Paused'"
        ).fetchone()
    assert read == (0, 0), read
    assert services.get("/v1/reembed/nope").status_code == 404
    # This API has no metrics token: its open /metrics names no migration or table (with the
    # token, test_metrics reads the migration series).
    metrics = httpx.get(f"{services.api_url}/metrics").text
    assert "embedq_queue_depth" in metrics
    assert 'migration="' not in metrics and "Song Lyrics" not in metrics
    assert env.state("paused")["chunks_done"] == frozen

    # As a start interrupted during CREATE INDEX CONCURRENTLY leaves it: the pending-rows index
    # invalid (the planner ignores it; IF NOT EXISTS would keep it). Resume rebuilds it.
    pending_valid = (
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = 'embedq_paused_pending'"
    )
    with env.connect() as conn:
        conn.execute(
            "UPDATE pg_index SET indisvalid = false"
            " WHERE indexrelid = '\"Shop Data\".embedq_paused_pending'::regclass"
        )
        assert conn.execute(pending_valid).fetchone() == (False,)
    env.cli("reembed", "resume", "paused")
    with env.connect() as conn:
        assert conn.execute(pending_valid).fetchone() == (True,)
    env.wait(lambda: env.state("paused")["phase"] == "following", "completion after resume")
    watched = env.cli("reembed", "status", "paused", "--watch").stdout
    assert "following" in watched
