"""`embedq mine` against the real stack: the fleet embeds the queries (with the model's
instruction), Postgres finds the candidates, and every negative written is inside the rank
range, not a positive, under the band, reproducible by seed, resumable, and scored as
/v1/rerank scores it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pgvector.psycopg import register_vector
from rich.console import Console
from sqlalchemy import text

from embedq_core.catalog import register_model_dir
from embedq_core.db import libpq_url
from embedq_core.manifest import ModelManifest
from embedq_core.query_protocol import serving_key
from embedq_core.queueing import make_redis
from ops.data.corpus import load_demo_corpus
from ops.devstack.processes import ChildProcess, process_env, start_worker
from ops.export.model import ExportOptions, export_model
from ops.mining import resume
from ops.mining.lines import text_key
from ops.mining.run import MineRequest, mine
from ops.mining.sampling import MiningParams
from tests.reranker_models import build_bert_reranker
from tests.support import ServiceHandle, engine_config, make_manifest_variant
from workers.engine import Embedder

INSTRUCTION = "Represent this sentence for searching relevant passages: "
EVAL_FILE = Path(__file__).parents[2] / "ops" / "data" / "eval_zh.jsonl"
CORPUS = "mine_corpus"
RANGE = (2, 40)
NEGATIVES = 5
POS_SHARE = 0.95


@dataclass(frozen=True)
class MineEnv:
    services: ServiceHandle
    model_dir: Path
    manifest: ModelManifest
    queries_file: Path
    lines: list[dict[str, Any]]
    texts_by_id: dict[str, str]
    ids_by_text: dict[str, str]
    reranker: ModelManifest
    tmp: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "ops.cli.main", "mine", "--collection", CORPUS,
             "--data", str(self.queries_file), *args],
            env=process_env(self.services.settings),
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result


def _labelled() -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """Corpus rows (the demo sentences and every passage of the shipped eval set) and query
    lines: the eval set's, positives as texts on most, as row ids on the last 20."""
    rows = [json.loads(line) for line in EVAL_FILE.read_text(encoding="utf-8").splitlines()]
    passages = list(dict.fromkeys(p for r in rows for p in r["pos"] + r["neg"]))
    corpus = [(f"p{i:03d}", text) for i, text in enumerate(passages)] + load_demo_corpus()
    id_of = {text: row_id for row_id, text in corpus}
    lines: list[dict[str, Any]] = []
    for number, row in enumerate(rows):
        if number < len(rows) - 20:
            lines.append({"query": row["query"], "pos": row["pos"], "type": "faq"})
        else:
            lines.append({"query": row["query"], "pos_ids": [id_of[p] for p in row["pos"]]})
    return corpus, lines


@pytest.fixture(scope="module")
def env(
    services: ServiceHandle, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MineEnv]:
    """MiniLM with a query instruction, its worker, a reranker and its worker, and the
    labelled corpus embedded by the fleet into collection mine_corpus."""
    tmp = tmp_path_factory.mktemp("mine")
    model_dir = tmp / "minilm-instructed"
    manifest = make_manifest_variant(
        minilm_dir, model_dir, query_instruction=INSTRUCTION, source_revision="test-mine"
    )
    with services.engine.begin() as conn:
        register_model_dir(conn, model_dir)
    corpus, lines = _labelled()
    source = build_bert_reranker(tmp / "reranker-src", [t for _, t in corpus])
    reranker_dir = tmp / "reranker"
    reranker = export_model(str(source), reranker_dir, ExportOptions(), engine_config())
    children: list[ChildProcess] = []
    redis = make_redis(services.settings)
    try:
        for name, directory in (("mine-worker", model_dir), ("mine-reranker", reranker_dir)):
            settings = services.settings.model_copy(update={"model_dir": directory})
            children.append(start_worker(settings, tmp, name=name))

        def served() -> bool:
            keys = [serving_key(m.manifest_id) for m in (manifest, reranker)]
            return all(redis.exists(key) for key in keys)

        services.wait_until(served, 120, "both new models served")
        created = services.post(
            "/v1/collections", {"name": CORPUS, "manifest_id": manifest.manifest_id}
        )
        assert created.status_code == 201, created.text
        job = services.submit(CORPUS, [{"id": i, "text": t} for i, t in corpus])
        assert job.status_code == 202, job.text
        assert services.wait_job(job.json()["job_id"], 300)["status"] == "completed"
        queries_file = tmp / "queries.jsonl"
        queries_file.write_text(
            "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines),
            encoding="utf-8",
        )
        yield MineEnv(
            services,
            model_dir,
            manifest,
            queries_file,
            lines,
            dict(corpus),
            {t: i for i, t in corpus},
            reranker,
            tmp,
        )
    finally:
        for child in children:
            child.stop()
        redis.close()


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _stored(env: MineEnv, table: str) -> dict[str, np.ndarray]:
    import psycopg

    with psycopg.connect(libpq_url(env.services.settings.require_database_url())) as conn:
        register_vector(conn)
        rows = conn.execute(f'SELECT id, embedding FROM "{table}"').fetchall()
    return {row_id: vector.to_numpy().astype(np.float64) for row_id, vector in rows}


def test_negatives_are_in_range_not_positive_and_under_the_band(env: MineEnv) -> None:
    """Checked against a ranking computed here from the vectors the fleet stored: a line is
    written exactly when some candidate in the range passes the band, and then its negatives
    are a sample of those candidates."""
    out = env.tmp / "exact.jsonl"
    result = env.cli(
        "--out", str(out), "--range", f"{RANGE[0]}-{RANGE[1]}", "--negatives", str(NEGATIVES),
        "--pos-share", str(POS_SHARE), "--seed", "7", "--exact",
    )  # fmt: skip
    written = {row["query"]: row for row in _read(out)}
    corpus = _stored(env, f"vectors_{CORPUS}")
    queries = _stored(env, f"vectors_{CORPUS}_mine")
    ids = sorted(corpus)
    matrix = np.stack([corpus[i] for i in ids])
    embedder = Embedder.from_model_dir(env.model_dir, engine_config())
    instructed = embedder.embed([line["query"] for line in env.lines], input_type="query")
    left_out = []
    for number, line in enumerate(env.lines):
        query = queries[text_key("q:", INSTRUCTION + line["query"])]
        # The fleet embedded the query with the model's instruction, as the engine does.
        assert float(query @ instructed.vectors[number]) >= 0.9999
        positives = line.get("pos") or [env.texts_by_id[i] for i in line["pos_ids"]]
        scores = matrix @ query
        order = sorted(range(len(ids)), key=lambda j: (-scores[j], ids[j]))
        kept = [ids[j] for j in order if env.texts_by_id[ids[j]] not in positives]
        pos_score = min(float(corpus[env.ids_by_text[p]] @ query) for p in positives)
        allowed = {
            env.texts_by_id[row_id]
            for row_id in kept[RANGE[0] - 1 : RANGE[1]]
            if float(corpus[row_id] @ query) <= POS_SHARE * pos_score
        }
        if not allowed:
            assert line["query"] not in written
            left_out.append(number + 1)
            continue
        row = written[line["query"]]
        assert row["pos"] == positives and row["prompt"] == INSTRUCTION
        passed = {k: v for k, v in row.items() if k not in ("pos", "neg", "prompt")}
        assert passed == {k: v for k, v in line.items() if k != "pos"}
        assert len(row["neg"]) == min(NEGATIVES, len(allowed))
        assert len(set(row["neg"])) == len(row["neg"]) and set(row["neg"]) <= allowed
    assert len(written) == len(env.lines) - len(left_out) >= 20, result.stdout
    if left_out:
        assert f"{len(left_out)} line(s) left out" in result.stdout, result.stdout


def _jobs_of(env: MineEnv, collection: str) -> int:
    with env.services.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM jobs WHERE collection = :c"), {"c": collection}
            ).scalar_one()
        )


def test_same_seed_same_file_other_seed_other_negatives(env: MineEnv) -> None:
    first, again, other = (env.tmp / f"seed-{n}.jsonl" for n in ("a", "b", "c"))
    env.cli("--out", str(first), "--seed", "11")
    jobs = _jobs_of(env, f"{CORPUS}_mine")
    env.cli("--out", str(again), "--seed", "11")
    env.cli("--out", str(other), "--seed", "12")
    # The reruns embedded nothing: the query vectors were in Postgres already.
    assert jobs >= 1 and _jobs_of(env, f"{CORPUS}_mine") == jobs
    assert first.read_bytes() == again.read_bytes()
    assert [r["neg"] for r in _read(first)] != [r["neg"] for r in _read(other)]


def test_an_interrupted_run_resumes_to_the_same_file(
    env: MineEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the first checkpoint, with half a line written past it: the rerun cuts
    the torn bytes and writes what an uninterrupted run writes."""
    whole, torn = env.tmp / "whole.jsonl", env.tmp / "torn.jsonl"
    params = MiningParams(2, 200, 4, 0.95, None, 5)
    console = Console(quiet=True)
    mine(env.services.settings, MineRequest(CORPUS, env.queries_file, whole, params), console)
    real_checkpoint = resume.checkpoint
    calls = 0

    def crash_after_first(handle: Any, out: Path, record: Any, position: Any) -> None:
        nonlocal calls
        real_checkpoint(handle, out, record, position)
        calls += 1
        handle.write(b'{"query": "torn')
        handle.flush()
        raise KeyboardInterrupt

    monkeypatch.setattr(resume, "checkpoint", crash_after_first)
    request = MineRequest(CORPUS, env.queries_file, torn, params)
    with pytest.raises(KeyboardInterrupt):
        mine(env.services.settings, request, console)
    monkeypatch.setattr(resume, "checkpoint", real_checkpoint)
    assert calls == 1 and resume.state_path(torn).exists()
    assert 0 < len(_read_prefix(torn)) < len(env.lines)
    summary = mine(env.services.settings, request, console)
    assert summary.lines_mined_now == len(env.lines) - 64
    assert torn.read_bytes() == whole.read_bytes()
    assert not resume.state_path(torn).exists()


def _read_prefix(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.endswith("}")]


def test_teacher_scores_are_the_rerank_endpoints(env: MineEnv) -> None:
    out = env.tmp / "teacher.jsonl"
    env.cli(
        "--out", str(out), "--negatives", "3", "--reranker", str(env.tmp / "reranker"),
        "--api-url", env.services.api_url, "--api-key", env.services.api_key,
    )  # fmt: skip
    written = _read(out)
    assert len(written) >= 20
    for row in written[:: len(written) // 6]:
        assert len(row["pos_scores"]) == len(row["pos"]) and len(row["neg_scores"]) == 3
        answer = env.services.post(
            "/v1/rerank",
            {"model": env.reranker.manifest_id, "query": row["query"],
             "documents": row["pos"] + row["neg"]},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        by_index = {r["index"]: r["relevance_score"] for r in answer.json()["results"]}
        expected = [by_index[i] for i in range(len(by_index))]
        np.testing.assert_allclose(row["pos_scores"] + row["neg_scores"], expected, atol=1e-5)
        assert all(isinstance(s, float) for s in row["pos_scores"] + row["neg_scores"])


def test_hnsw_finds_the_exact_candidates_on_a_small_corpus(env: MineEnv) -> None:
    def index_built() -> bool:
        with env.services.engine.connect() as conn:
            return bool(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                        " WHERE c.relname = :name AND i.indisvalid"
                    ),
                    {"name": f"vectors_{CORPUS}_embedding_hnsw"},
                ).scalar_one()
            )

    env.services.wait_until(index_built, 120, "the corpus's HNSW index")
    exact, approx = env.tmp / "cand-exact.jsonl", env.tmp / "cand-hnsw.jsonl"
    env.cli("--out", str(exact), "--exact", "--seed", "3")
    env.cli("--out", str(approx), "--seed", "3", "--ef-search", "400")
    assert exact.read_bytes() == approx.read_bytes()
