"""A chunking vectorizer against real processes: long texts cut into token windows, kept in
`<table>_<vector>_chunks`; then a writer inserting, updating (text and other columns),
emptying and deleting while a worker is SIGKILLed. At the end every row with text has exactly
the windows its current text is cut into, each holding that window's vector from the model
(the chunking and the vectors an in-process engine computes now); rows without text and deleted
rows have none; updates of other columns rewrote no window."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tests.e2e.vectorize_harness import TITLES, VectorizeEnv, Writer, has_text, render
from workers.engine import Embedder, EngineConfig

NAME = "manuals_vec"
TABLE = "manuals"
ROWS = 240
MAX_TOKENS, OVERLAP = 32, 8
WRITER_S = 8.0


def _make_manuals(env: VectorizeEnv) -> None:
    """manuals(id, title, body, plays): each body three sentences of the bundled corpus, so
    most texts are cut into several windows."""
    from ops.data.corpus import load_demo_corpus

    sentences = [t for _, t in load_demo_corpus()]
    with env.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE} CASCADE")
        conn.execute(
            f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, title text, body text,"
            " plays integer NOT NULL DEFAULT 0)"
        )
        with conn.cursor().copy(f"COPY {TABLE} (id, title, body) FROM STDIN") as copy:
            for i in range(1, ROWS + 1):
                body = " ".join(sentences[(i * 3 + k) % len(sentences)] for k in range(3))
                empty = i % 50 == 0  # a few rows with nothing to embed
                copy.write_row(
                    (i, None if empty else TITLES[i % len(TITLES)], None if empty else body)
                )


def _windows(conn: Any, table: str) -> dict[int, list[tuple[Any, ...]]]:
    out: dict[int, list[tuple[Any, ...]]] = {}
    for row in conn.execute(
        f"SELECT id, chunk_no, span_start, span_end, chunk_text, embedding FROM {table}"
        " ORDER BY id, chunk_no"
    ):
        out.setdefault(int(row[0]), []).append(row[1:])
    return out


def assert_windows_exactly_right(env: VectorizeEnv) -> int:
    """Every row with text has its current text's windows (number, span, text) with their
    vectors from the model, and is marked with the model's manifest; the rest have none.
    Returns the windows checked."""
    with env.connect() as conn:
        rows = conn.execute(
            f"SELECT id, title, body, embedding_manifest FROM {TABLE} ORDER BY id"
        ).fetchall()
        stored = _windows(conn, f"{TABLE}_embedding_chunks")
    with_text = [r for r in rows if has_text(r[1], r[2])]
    without = [r[0] for r in rows if not has_text(r[1], r[2])]
    assert without, "no row without text: the check below would prove nothing"
    assert not [i for i in without if i in stored], "a row without text kept windows"
    assert set(stored) <= {r[0] for r in rows}, "windows of a deleted row survived"
    unmarked = [r[0] for r in with_text if r[3] != env.manifest.manifest_id]
    assert not unmarked, f"rows with text not marked embedded: {unmarked[:5]}"

    embedder = Embedder.from_model_dir(env.model_dir, EngineConfig.from_settings(env.settings))
    texts = [render(r[1], r[2]) for r in with_text]
    chunked = embedder.chunk(texts, MAX_TOKENS, OVERLAP)
    flat = [c for chunks in chunked for c in chunks]
    vectors = embedder.run(embedder.prepare_chunks(flat)).vectors
    index, worst = 0, 1.0
    for row, chunks in zip(with_text, chunked, strict=True):
        have = stored.get(row[0], [])
        assert [(w[0], w[1], w[2], w[3]) for w in have] == [
            (c.chunk_no, c.span_start, c.span_end, c.text) for c in chunks
        ], f"row {row[0]}: its windows are not its current text's"
        for window in have:
            worst = min(worst, float(np.dot(window[4].to_numpy(), vectors[index])))
            index += 1
    assert worst >= 0.9999, worst
    assert max(len(c) for c in chunked) >= 3, "no text was long enough for several windows"
    return index


def test_a_chunking_vectorizer_keeps_each_rows_windows_exactly_its_current_texts(
    venv: VectorizeEnv,
) -> None:
    _make_manuals(venv)
    venv.start_worker()
    added = venv.cli(
        "vectorize", "add", NAME, "--table", TABLE, "--id", "id", "--template",
        "{title}\\n{body}", "--vector", "embedding", "--model", str(venv.model_dir),
        "--chunk-max-tokens", str(MAX_TOKENS), "--chunk-overlap-tokens", str(OVERLAP),
    )  # fmt: skip
    shown = f'"public"."{TABLE}_embedding_chunks"'  # as SQL reads it, quoted like the table
    assert f"{shown}.embedding (windows of 32 tokens" in added.stdout, added
    venv.wait(lambda: venv.figures(NAME)["phase"] == "following", "backfill and HNSW index", 300)
    figures = venv.figures(NAME)
    assert figures["chunk_table"] == shown, figures
    assert (figures["chunk_max_tokens"], figures["chunk_overlap_tokens"]) == (32, 8)
    with venv.connect() as conn:
        hnsw = conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c"
            " ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid"
            f" WHERE t.relname = '{TABLE}_embedding_chunks' AND c.relname LIKE '%hnsw'"
        ).fetchall()
    assert hnsw == [(f"embedq_{NAME}_hnsw", True)], hnsw
    assert_windows_exactly_right(venv)
    # A row updated in other columns only keeps the very same window tuples (no re-embedding).
    windows_of_7 = f"SELECT xmin::text, chunk_no FROM {TABLE}_embedding_chunks WHERE id = 7"
    with venv.connect() as conn:
        before = conn.execute(windows_of_7).fetchall()
        conn.execute(f"UPDATE {TABLE} SET plays = plays + 1 WHERE id = 7")
        conn.execute(f"UPDATE {TABLE} SET body = body || ' 新' WHERE id = 8")
    venv.wait(lambda: venv.figures(NAME)["rows_pending"] == 0, "row 8 embedded again")
    with venv.connect() as conn:
        after = conn.execute(windows_of_7).fetchall()
    assert len(before) >= 2 and sorted(after) == sorted(before), (before, after)

    writer = Writer(venv, TABLE, ROWS + 1, pause_s=0.02)
    writer.start()
    try:
        time.sleep(WRITER_S / 2)
        venv.workers[0].kill()  # mid-chunk or idle: a chunk's windows commit whole or not at all
        venv.start_worker()
        time.sleep(WRITER_S / 2)
    finally:
        writer.stop()
    assert not writer.errors, writer.errors[:3]
    assert writer.counts.get("clear", 0) and writer.counts.get("delete", 0), writer.counts
    venv.wait(
        lambda: (f := venv.figures(NAME))["rows_pending"] == 0 and f["lag_s"] is None,
        "the writer's rows embedded",
    )
    assert assert_windows_exactly_right(venv) > 50
    refused = venv.cli(
        "vectorize", "change-model", NAME, "--model", str(venv.model_dir), check=False
    )
    assert refused.returncode != 0 and "dropping it and adding" in refused.stderr, refused.stderr
    venv.cli("vectorize", "drop", NAME, "--drop-columns")
    with venv.connect() as conn:
        gone = conn.execute(f"SELECT to_regclass('{TABLE}_embedding_chunks')").fetchone()
    assert gone == (None,)
