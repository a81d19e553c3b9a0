"""Table vectorizers against real processes: an 8,000-row table bound with a template over two
columns and backfilled by MiniLM workers; then a writer inserting, updating (text and other
columns) and deleting for 40 s while workers are SIGKILLed and Valkey is flushed. At the
end every row with text holds its current text's vector, the others none; updates of other
columns embedded nothing; no statement of the writer hit its lock timeout. Also: rows the table
refuses are retried, parked and released without holding up the rest; drop; bad bindings."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import redis

from api.metrics import StoreMetrics
from embedq_core.api_keys import create_key
from embedq_core.db import make_engine
from embedq_core.queueing import make_redis
from tests.e2e.vectorize_harness import (
    NAME,
    TEMPLATE,
    VectorizeEnv,
    Writer,
    assert_exactly_right,
    has_text,
    make_table,
)
from tests.support import ServiceHandle

ROWS = 8_000
WRITER_S = 40.0
CHAOS_ROUNDS = 4


def test_a_bound_table_follows_writes_through_kills_and_a_flushed_broker(
    venv: VectorizeEnv,
) -> None:
    table = "lyrics"
    make_table(venv, table, ROWS)
    venv.start_worker()
    venv.start_worker()
    added = venv.cli(
        "vectorize", "add", NAME, "--table", table, "--id", "id", "--template", TEMPLATE,
        "--vector", "embedding", "--model", str(venv.model_dir),
    )  # fmt: skip
    assert f"vectorizer {NAME}" in added.stdout and "8,000 rows" in added.stdout, added.stdout
    venv.wait(lambda: venv.figures()["phase"] == "following", "backfill and HNSW index", 600)
    with venv.connect() as conn:
        hnsw = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            f" WHERE c.relname = 'embedq_{NAME}_hnsw'"
        ).fetchone()
    assert hnsw == (True,)

    writer = Writer(venv, table, ROWS + 1)
    broker = redis.Redis.from_url(venv.settings.require_redis_url())
    writer.start()
    started = time.monotonic()
    kills = flushes = 0
    try:
        # Four crashes spread over the writer's time, every other one with the broker wiped.
        for round_no in range(CHAOS_ROUNDS):
            due = started + (round_no + 1) * WRITER_S / (CHAOS_ROUNDS + 1)
            time.sleep(max(0.0, due - time.monotonic()))
            victim = next(w for w in venv.workers if w.alive())  # the longest-running one
            victim.kill()  # mid-chunk or idle: either way nothing may be lost
            kills += 1
            if round_no % 2 == 0:
                broker.flushdb()  # every queued step message gone; Postgres still knows
                flushes += 1
            venv.start_worker()
        time.sleep(max(0.0, started + WRITER_S - time.monotonic()))
    finally:
        writer.stop()
        broker.close()
    assert kills >= 4 and flushes >= 2 and writer.counts["insert"] > 100
    assert not writer.errors, (writer.errors[:5], writer.worst_s)
    venv.wait(
        lambda: (f := venv.figures())["rows_pending"] == 0 and f["lag_s"] is None,
        "every written row embedded",
        300,
    )
    checked = assert_exactly_right(venv, table)
    assert checked > ROWS // 2  # the writer deleted and emptied some

    # Updates of other columns (or setting a text to itself) never fire the trigger: no vector
    # is cleared, so no row is pending, so nothing can be embedded again.
    reads = venv.engine_reads()
    count_null = f"SELECT count(*) FROM {table} WHERE embedding IS NULL AND id <= 2000"
    with venv.connect() as conn:
        before = conn.execute(count_null).fetchone()
        conn.execute(f"UPDATE {table} SET plays = plays + 1 WHERE id <= 2000")
        conn.execute(f"UPDATE {table} SET title = title WHERE id <= 500")  # same text
        after = conn.execute(count_null).fetchone()
    assert after == before
    assert venv.figures()["rows_pending"] == 0 and venv.engine_reads() == reads

    status = json.loads(venv.cli("vectorize", "status", NAME, "--json").stdout)
    assert status["kind"] == "vectorizer" and status["phase"] == "following"
    assert status["rows_parked"] == 0 and status["failures"] == []
    listed = venv.cli("vectorize", "list").stdout
    assert NAME in listed and "following" in listed


def test_rows_the_table_refuses_are_retried_parked_and_never_hold_up_the_rest(
    venv: VectorizeEnv, services: ServiceHandle
) -> None:
    """The table's own trigger refuses the vector of 'poison' rows: the others are embedded
    around them; the poison rows are retried with backoff, parked after 3 attempts and shown
    with their error; once the table is fixed, resume --retry-parked embeds them."""
    table = "lyrics_refusing"
    rows = make_table(venv, table, 600)
    with venv.connect() as conn:
        conn.execute(f"UPDATE {table} SET title = 'poison' WHERE id IN (7, 300, 301)")
        conn.execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.title = 'poison' AND NEW.embedding IS NOT NULL THEN"
            " RAISE EXCEPTION 'poisoned row %', NEW.id; END IF; RETURN NEW; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER refuse BEFORE UPDATE ON {table} FOR EACH ROW"
            " EXECUTE FUNCTION refuse_poison()"
        )
    venv.start_worker()
    venv.cli(
        "vectorize", "add", "refusing", "--table", table, "--id", "id", "--template", TEMPLATE,
        "--vector", "embedding", "--model", str(venv.model_dir), "--chunk-size", "100",
    )  # fmt: skip

    def parked() -> bool:
        return venv.figures("refusing")["rows_parked"] == 3

    venv.wait(parked, "the three poison rows parked")
    figures = venv.figures("refusing")
    assert figures["status"] == "running" and figures["rows_retrying"] == 0
    assert figures["rows_pending"] == 3  # only the parked ones
    # A row inserted after them is embedded: nothing waits behind the parked rows.
    with venv.connect() as conn:
        conn.execute(f"INSERT INTO {table} (id, title, body) VALUES (9999, 'late', 'a late row')")
    venv.wait(lambda: venv.figures("refusing")["rows_pending"] == 3, "the late row embedded")
    status = json.loads(venv.cli("vectorize", "status", "refusing", "--json").stdout)
    assert sorted(f["row"] for f in status["failures"]) == [7, 300, 301]
    assert all(f["parked"] and f["attempts"] == 3 for f in status["failures"])
    assert "poisoned row" in status["failures"][0]["error"]
    shown = venv.cli("vectorize", "status", "refusing").stdout
    assert "rows the table refused" in shown and "parked" in shown

    with venv.connect() as conn:
        conn.execute(f"DROP TRIGGER refuse ON {table}")
    venv.cli("vectorize", "resume", "refusing", "--retry-parked")
    venv.wait(lambda: venv.figures("refusing")["rows_pending"] == 0, "the released rows")
    assert venv.figures("refusing")["rows_parked"] == 0
    assert assert_exactly_right(venv, table) == sum(has_text(*r) for r in rows.values()) + 1


def test_lag_and_pending_reach_prometheus_and_drop_keeps_or_drops_the_vectors(
    venv: VectorizeEnv, services: ServiceHandle
) -> None:
    table = "lyrics_metrics"
    make_table(venv, table, 300)
    venv.cli(
        "vectorize", "add", "metered", "--table", table, "--id", "id", "--text", "body",
        "--vector", '"Vec"', "--model", str(venv.model_dir),
    )  # fmt: skip
    # No worker yet: everything waits, and the lag grows.
    with venv.connect() as conn:
        conn.execute(f"INSERT INTO {table} (id, body) VALUES (5000, 'waiting')")
    venv.wait(lambda: (venv.figures("metered")["lag_s"] or 0) > 0.2, "a measurable lag")
    # What the API's /metrics serves behind its token, read by its own collector.
    families = {
        family.name: family
        for family in StoreMetrics(
            make_engine(venv.settings.require_database_url(), pool_size=1),
            make_redis(venv.settings),
            cache_s=0,
            with_names=True,
        ).collect()
    }
    samples = {
        (s.name, s.labels.get("vectorizer"), s.labels.get("state")): s.value
        for family in families.values()
        for s in family.samples
    }
    assert samples[("embedq_vectorizer_lag_seconds", "metered", None)] > 0.2
    assert samples[("embedq_vectorizer_pending_rows", "metered", None)] == 301
    assert samples[("embedq_vectorizer_failed_rows", "metered", "parked")] == 0

    venv.start_worker()
    venv.wait(lambda: venv.figures("metered")["rows_pending"] == 0, "the table embedded")
    with venv.connect() as conn:
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
                " AND NOT attisdropped",
                (table,),
            )
        }
    assert {"Vec", "Vec_manifest", "Vec_queued_at"} <= columns
    venv.cli("vectorize", "drop", "metered")
    with venv.connect() as conn:
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
            (table,),
        ).fetchone()
        conn.execute(f"UPDATE {table} SET body = 'changed' WHERE id = 1")
        kept = conn.execute(f'SELECT count(*) FROM {table} WHERE "Vec" IS NOT NULL').fetchone()
    assert triggers == (0,) and kept is not None and kept[0] > 250
    assert venv.cli("vectorize", "status", "metered", check=False).returncode != 0


def test_bindings_that_cannot_work_are_refused_with_the_reason(venv: VectorizeEnv) -> None:
    table = "lyrics_refused"
    make_table(venv, table, 20)
    with venv.connect() as conn:
        conn.execute(
            f"ALTER TABLE {table} ADD COLUMN filled vector(384), ADD COLUMN small vector(3)"
        )
        conn.execute(
            f"UPDATE {table} SET filled = array_fill(0.1, ARRAY[384])::vector WHERE id = 1"
        )
    base = [
        "vectorize",
        "add",
        "bad",
        "--table",
        table,
        "--id",
        "id",
        "--model",
        str(venv.model_dir),
    ]
    cases = {
        ("--text", "body", "--template", "{body}", "--vector", "v"): "not both",
        ("--text", "plays", "--vector", "v"): "is integer, not text",
        ("--template", "{body} {nope}", "--vector", "v"): "nope is not a column",
        ("--template", "{body", "--vector", "v"): "unclosed",
        ("--template", "no columns", "--vector", "v"): "names no column",
        ("--text", "body", "--vector", "filled"): "already holds vectors",
        ("--text", "body", "--vector", "small"): "vector(3), not vector(384)",
        ("--text", "body", "--vector", "body"): "is the table's text column",
        ("--text", "body", "--id", "title", "--vector", "v"): "primary key",
        ("--text", "body", "--vector", "v", "--chunk-max-tokens", "900"): "max_tokens must be 1..",
        ("--text", "body", "--vector", "v", "--chunk-overlap-tokens", "4"): "needs --chunk-max",
    }
    for args, message in cases.items():
        result = venv.cli(*base, *args, check=False)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
    with venv.connect() as conn:
        assert conn.execute(
            "SELECT count(*) FROM reembed_migrations WHERE name = 'bad'"
        ).fetchone() == (0,)


def test_admin_keys_manage_vectorizers_over_http_and_other_keys_are_refused(
    venv: VectorizeEnv, services: ServiceHandle
) -> None:
    table = "lyrics_http"
    make_table(venv, table, 200)
    with services.engine.begin() as conn:
        _, admin_key = create_key(conn, "vectorize-admin", admin=True)
        _, plain_key = create_key(conn, "vectorize-plain")
    body = {
        "name": "over_http", "table": table, "id": "id", "template": TEMPLATE,
        "vector": "embedding", "model": venv.manifest.manifest_id,
    }  # fmt: skip

    def call(method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{services.api_url}{path}", headers={"Authorization": f"Bearer {key}"},
            timeout=120, **kwargs,
        )  # fmt: skip

    refused = call("POST", "/v1/vectorizers", plain_key, json=body)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"][0]["loc"] == ["header", "authorization"]
    assert call("GET", "/v1/vectorizers", plain_key).status_code == 403

    bad = call("POST", "/v1/vectorizers", admin_key, json={**body, "template": "{nope}"})
    assert bad.status_code == 422 and "nope is not a column" in bad.text, bad.text
    created = call("POST", "/v1/vectorizers", admin_key, json=body)
    assert created.status_code == 201, created.text
    assert created.json()["kind"] == "vectorizer" and created.json()["rows_total"] == 200
    again = call("POST", "/v1/vectorizers", admin_key, json=body)
    assert again.status_code == 409, again.text
    venv.start_worker()
    venv.wait(lambda: venv.figures("over_http")["phase"] == "following", "the backfill")
    listed = call("GET", "/v1/vectorizers", admin_key).json()
    ours = [v for v in listed if v["name"] == "over_http"]
    assert len(ours) == 1 and ours[0]["rows_pending"] == 0
    assert ours[0]["table"] == f'"public"."{table}"'
    paused = call("POST", "/v1/vectorizers/over_http/pause", admin_key)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    resumed = call(
        "POST", "/v1/vectorizers/over_http/resume", admin_key, json={"retry_parked": True}
    )
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"
    assert call("GET", "/v1/vectorizers/nope", admin_key).status_code == 404
    gone = call("DELETE", "/v1/vectorizers/over_http?drop_columns=true", admin_key)
    assert gone.status_code == 204, gone.text
    with venv.connect() as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass"
            " AND attname LIKE 'embedding%%' AND NOT attisdropped",
            (table,),
        ).fetchone()
    assert left == (0,)
