"""A vectorizer's model change through the re-embedding migration, against real processes: a
table bound with MiniLM (384-d) moves to a BGE-shaped model (1024-d) while a writer inserts,
updates and deletes. Before finalize both models follow the table (the vectorizer its column,
the migration the new one), so after a cutover and a rollback each column holds exactly its
model's vectors of the current texts; after finalize the vectorizer follows with the new model
on the new model's worker alone, with its indexes, lag and status in place. Also: a binding to
a BGE-M3-shaped model keeps lexical weights beside its vectors, and moves to a dense model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from embedq_core.sparse_vectors import top_weights
from tests.e2e.vectorize_harness import (
    TEMPLATE,
    VectorizeEnv,
    Writer,
    assert_exactly_right,
    has_text,
    make_table,
    render,
)
from tests.support import make_manifest_variant
from workers.engine import Embedder, EngineConfig

ROWS = 1_000
# A steady product: ~30 statements a second.
WRITER_PAUSE_S = 0.03
NAME = "songs_vec"
CHANGE = f"{NAME}_change1"
TABLE = "songs_mc"

pytestmark = pytest.mark.timeout(900)


def _columns(venv: VectorizeEnv, table: str = TABLE) -> dict[str, str]:
    with venv.connect() as conn:
        rows = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (table,),
        ).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def _objects(venv: VectorizeEnv) -> dict[str, Any]:
    """The table's triggers, and its indexes with their validity."""
    with venv.connect() as conn:
        triggers = {
            str(r[0])
            for r in conn.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
                (TABLE,),
            ).fetchall()
        }
        indexes = dict(
            conn.execute(
                "SELECT c.relname, i.indisvalid FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass",
                (TABLE,),
            ).fetchall()
        )
    return {"triggers": triggers, "indexes": indexes}


def _settled(venv: VectorizeEnv, *names: str) -> None:
    venv.wait(
        lambda: all(venv.figures(n)["rows_pending"] == 0 for n in names),
        f"nothing pending for {names}",
        300,
    )


def test_a_model_change_runs_through_cutover_rollback_and_finalize_while_writes_go_on(
    venv: VectorizeEnv, tiny_bge_dir: Path, tmp_path: Path
) -> None:
    new_dir = tmp_path / "tiny-bge-change"
    new_manifest = make_manifest_variant(tiny_bge_dir, new_dir, source_revision="test-change")
    make_table(venv, TABLE, ROWS)
    old_worker = venv.start_worker()
    venv.cli(
        "vectorize", "add", NAME, "--table", TABLE, "--id", "id", "--template", TEMPLATE,
        "--vector", "embedding", "--model", str(venv.model_dir), "--chunk-size", "64",
    )  # fmt: skip
    venv.wait(lambda: venv.figures(NAME)["phase"] == "following", "the binding's backfill")
    venv.start_worker(new_dir)

    writer = Writer(venv, TABLE, ROWS + 1, pause_s=WRITER_PAUSE_S)
    writer.start()
    started = venv.cli(
        "vectorize", "change-model", NAME, "--model", str(new_dir), "--chunk-size", "64"
    )
    assert f"model change {CHANGE}" in started.stdout and "384-d -> 1024-d" in started.stdout
    status = json.loads(venv.cli("vectorize", "status", NAME, "--json").stdout)
    assert status["model_change"] == CHANGE
    # While it runs: no second change, no drop (either would strand the other's columns).
    again = venv.cli("vectorize", "change-model", NAME, "--model", str(new_dir), check=False)
    assert again.returncode != 0 and f"already has a model change in progress: {CHANGE}" in (
        again.stderr
    )
    dropped = venv.cli("vectorize", "drop", NAME, check=False)
    assert dropped.returncode != 0 and "finalize it first" in dropped.stderr
    venv.wait(lambda: venv.figures(CHANGE)["phase"] == "following", "the new model's backfill")
    assert _columns(venv)["embedding_next"] == "vector(1024)"

    venv.cli("reembed", "cutover", CHANGE)
    columns = _columns(venv)
    assert columns["embedding"] == "vector(1024)"  # readers' column: the new model's vectors
    assert columns["embedding_legacy"] == "vector(384)"
    assert "embedding_legacy_queued_at" in columns and "embedding_next" not in columns
    venv.cli("reembed", "rollback", CHANGE)
    assert _columns(venv)["embedding"] == "vector(384)"
    writer.stop()
    # Both models followed every write, through the cutover and the rollback.
    _settled(venv, NAME, CHANGE)
    assert assert_exactly_right(venv, TABLE) > ROWS // 2
    assert_exactly_right(venv, TABLE, "embedding_next", new_dir)
    verify = json.loads(venv.cli("reembed", "verify", CHANGE, "--model", str(new_dir)).stdout)
    assert verify["ok"] and verify["missing"] == 0, verify

    writer = Writer(venv, TABLE, writer.next_id, pause_s=WRITER_PAUSE_S)
    writer.start()
    venv.cli("reembed", "cutover", CHANGE)
    venv.cli("reembed", "finalize", CHANGE, "--yes")
    # The vectorizer now follows with the new model: its old worker is no longer needed.
    old_worker.stop()
    venv.wait(lambda: writer.counts.get("insert", 0) > 30, "inserts after the handover")
    writer.stop()
    assert not [e for e in writer.errors if "lock timeout" not in e], writer.errors[:5]
    venv.wait(
        lambda: (f := venv.figures(NAME))["rows_pending"] == 0 and f["lag_s"] is None,
        "every write after the handover embedded",
        300,
    )
    assert assert_exactly_right(venv, TABLE, "embedding", new_dir) > ROWS // 2

    columns = _columns(venv)
    assert columns["embedding"] == "vector(1024)" and "embedding_queued_at" in columns
    assert not {c for c in columns if "legacy" in c or "next" in c}, columns
    objects = _objects(venv)
    assert objects["triggers"] == {f"embedq_{NAME}_dirty", f"embedq_{NAME}_queue"}
    for kind in ("pending", "queued", "hnsw"):
        assert objects["indexes"][f"embedq_{NAME}_{kind}"] is True, objects["indexes"]
    assert not [i for i in objects["indexes"] if CHANGE in i], objects["indexes"]
    status = json.loads(venv.cli("vectorize", "status", NAME, "--json").stdout)
    assert status["manifest_id"] == new_manifest.manifest_id and status["model_change"] is None
    assert status["status"] == "running" and status["phase"] == "following"
    # The binding can change again, and a change not cut over can be given up.
    venv.cli("vectorize", "change-model", NAME, "--model", str(venv.model_dir))
    venv.cli("vectorize", "abandon-change", f"{NAME}_change2")
    assert set(_columns(venv)) == set(columns)
    assert _objects(venv)["triggers"] == objects["triggers"]


def test_a_binding_to_a_sparse_model_keeps_its_weights_and_can_move_to_a_dense_model(
    venv: VectorizeEnv, tiny_m3_dir: Path, tmp_path: Path
) -> None:
    """Bound with a BGE-M3-shaped model, the table keeps each row's lexical weights beside its
    vector (`embedding_sparse`, the 256 largest, as collections store them), through inserts,
    text changes and cleared texts; a change to MiniLM moves the weights aside with the old
    vectors at cutover and drops them at finalize."""
    table, name = "docs_sparse", "docs_sparse_vec"
    m3_dir = tmp_path / "tiny-m3-vectorize"
    m3 = make_manifest_variant(tiny_m3_dir, m3_dir, source_revision="test-vectorize-sparse")
    assert m3.sparse and m3.vocab_size is not None
    make_table(venv, table, 300)
    venv.start_worker(m3_dir)
    added = venv.cli(
        "vectorize", "add", name, "--table", table, "--id", "id", "--template", TEMPLATE,
        "--vector", "embedding", "--model", str(m3_dir), "--chunk-size", "64",
    )  # fmt: skip
    assert "lexical weights in embedding_sparse" in added.stdout, added.stdout
    venv.wait(lambda: venv.figures(name)["phase"] == "following", "the backfill")
    with venv.connect() as conn:
        conn.execute(f"UPDATE {table} SET body = body || ' 新' WHERE id IN (3, 4, 5)")
        conn.execute(f"UPDATE {table} SET title = '', body = NULL WHERE id = 6")
        conn.execute(f"INSERT INTO {table} (id, title, body) VALUES (1000, '民谣', '晚风')")
    venv.wait(lambda: venv.figures(name)["rows_pending"] == 0, "the writes embedded")
    assert _columns(venv, table)["embedding_sparse"] == f"sparsevec({m3.vocab_size})"
    assert_exactly_right(venv, table, "embedding", m3_dir)
    _assert_weights_right(venv, table, "embedding_sparse", m3_dir)

    venv.start_worker()  # MiniLM
    change = f"{name}_change1"
    venv.cli("vectorize", "change-model", name, "--model", str(venv.model_dir))
    venv.wait(lambda: venv.figures(change)["phase"] == "following", "the new model's backfill")
    venv.cli("reembed", "cutover", change)
    columns = _columns(venv, table)
    assert columns["embedding"] == "vector(384)" and "embedding_sparse" not in columns
    assert columns["embedding_legacy_sparse"] == f"sparsevec({m3.vocab_size})"
    with venv.connect() as conn:  # the old model still follows, weights included
        conn.execute(f"UPDATE {table} SET body = '新的歌词' WHERE id = 7")
    venv.wait(
        lambda: all(venv.figures(n)["rows_pending"] == 0 for n in (name, change)),
        "the change followed by both models",
    )
    _assert_weights_right(venv, table, "embedding_legacy_sparse", m3_dir)
    venv.cli("reembed", "finalize", change, "--yes")
    columns = _columns(venv, table)
    assert not {c for c in columns if "sparse" in c or "legacy" in c}, columns
    assert_exactly_right(venv, table)


def _assert_weights_right(venv: VectorizeEnv, table: str, column: str, model_dir: Path) -> None:
    """Every row with text holds its text's 256 largest lexical weights; the others none."""
    with venv.connect() as conn:
        rows = conn.execute(f"SELECT id, title, body, {column} FROM {table}").fetchall()
    with_text = [r for r in rows if has_text(r[1], r[2])]
    assert all(r[3] is None for r in rows if not has_text(r[1], r[2]))
    texts = [render(r[1], r[2]) for r in with_text]
    config = EngineConfig.from_settings(venv.settings)
    weights = Embedder.from_model_dir(model_dir, config).embed(texts).sparse
    assert weights is not None
    for row, expected_weights in zip(with_text, weights, strict=True):
        assert row[3] is not None, f"row {row[0]} has no weights"
        stored = dict(zip(row[3].indices(), row[3].values(), strict=True))
        expected = top_weights(expected_weights)
        assert stored.keys() == expected.keys(), row[0]
        assert max(abs(stored[t] - expected[t]) for t in expected) < 1e-4, row[0]
