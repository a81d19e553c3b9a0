"""Small batches waiting in the queue are embedded together in one engine call, each written to
its own collection with its own text's vector; a worker killed with such a group unwritten
loses nothing and writes nothing twice."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from sqlalchemy import text

from embedq_core.catalog import create_collection, register_model_dir
from embedq_core.db import libpq_url
from ops.data.corpus import load_demo_corpus
from ops.devstack.processes import ChildProcess, process_env
from ops.devstack.stack import free_port
from tests.support import (
    WRITE_GATE,
    PrivatePipeline,
    engine_config,
    gate_writes_and_audit,
    writes_waiting,
)
from workers.engine import Embedder

JOBS = 24
TEXTS_PER_JOB = 3


def _metric(url: str, name: str) -> float:
    body = httpx.get(url, timeout=10).text
    values = [
        float(m[1]) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", body, re.MULTILINE)
    ]
    return sum(values)


def _submit_small_jobs(pipeline: PrivatePipeline, twin: str) -> list[str]:
    """JOBS jobs of TEXTS_PER_JOB texts, alternating between the pipeline's collection and its
    twin; the same ids go to both collections with different texts."""
    corpus = [t for _, t in load_demo_corpus()]
    job_ids = []
    for job in range(JOBS):
        collection = pipeline.collection if job % 2 == 0 else twin
        items = [
            {"id": f"n{job // 2}-{i}", "text": corpus[(job * TEXTS_PER_JOB + i) % len(corpus)]}
            for i in range(TEXTS_PER_JOB)
        ]
        response = pipeline.handle.submit(collection, items)
        assert response.status_code == 202, response.text
        job_ids.append(response.json()["job_id"])
    return job_ids


def _twin_collection(pipeline: PrivatePipeline, model_dir: Path) -> str:
    twin = f"{pipeline.collection}_twin"
    with pipeline.handle.engine.begin() as conn:
        manifest = register_model_dir(conn, model_dir)
    create_collection(pipeline.handle.engine, twin, manifest.manifest_id)
    return twin


def test_waiting_small_jobs_share_engine_calls_and_each_gets_its_own_vectors(
    private_pipeline: Callable[..., PrivatePipeline],
) -> None:
    metrics_port = free_port()
    pipeline = private_pipeline(
        "coalesce", worker_metrics_port=metrics_port, worker_metrics_host="127.0.0.1"
    )
    model_dir = pipeline.handle.settings.model_dir
    assert model_dir is not None
    twin = _twin_collection(pipeline, model_dir)
    # Submitted before any worker runs: every batch waits in the queue.
    job_ids = _submit_small_jobs(pipeline, twin)
    pipeline.start_worker()
    for job_id in job_ids:
        status = pipeline.handle.wait_job(job_id)
        assert (status["status"], status["done"]) == ("completed", TEXTS_PER_JOB), status

    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    coalesced = _metric(metrics_url, "embedq_worker_coalesced_batches_total")
    engine_calls = _metric(metrics_url, "embedq_worker_engine_batches_total")
    # 24 batches of 3 texts fit in a handful of engine calls; one call per job without it.
    assert coalesced >= JOBS // 2, coalesced
    assert engine_calls < JOBS // 2, engine_calls
    # Each stored row holds its own text's vector, in each collection (the ids repeat).
    embedder = Embedder.from_model_dir(model_dir, engine_config())
    url = libpq_url(pipeline.handle.settings.require_database_url())
    with psycopg.connect(url) as conn:
        register_vector(conn)
        for collection in (pipeline.collection, twin):
            rows = conn.execute(f"SELECT id, text, embedding FROM vectors_{collection}").fetchall()
            assert len(rows) == JOBS // 2 * TEXTS_PER_JOB
            expected = embedder.embed([r[1] for r in rows]).vectors
            stored = np.stack([r[2].to_numpy() for r in rows])
            cosines = np.sum(stored * expected, axis=1)
            assert cosines.min() > 0.999, (collection, cosines.min())
    # Their own messages, arriving after the group wrote them, found nothing left to do; a
    # batch embedded in a group spent no attempt, one embedded alone spent one.
    with pipeline.handle.engine.connect() as conn:
        fewest, most = conn.execute(
            text("SELECT min(attempts), max(attempts) FROM job_items WHERE job_id = ANY(:ids)"),
            {"ids": job_ids},
        ).one()
    assert (fewest, most) in {(0, 0), (0, 1)}, (fewest, most)


def test_a_worker_killed_before_writing_a_group_loses_nothing_and_writes_nothing_twice(
    private_pipeline: Callable[..., PrivatePipeline],
) -> None:
    pipeline = private_pipeline("coalescekill", requeue_grace_s=1.0, reconcile_interval_s=0.5)
    model_dir = pipeline.handle.settings.model_dir
    assert model_dir is not None
    twin = _twin_collection(pipeline, model_dir)
    gate_writes_and_audit(pipeline)
    job_ids = _submit_small_jobs(pipeline, twin)
    url = libpq_url(pipeline.handle.settings.require_database_url())
    with psycopg.connect(url, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(%s)", (WRITE_GATE,))
        worker = pipeline.start_worker()
        # The first delivery claims the other waiting batches too; its group's first write into
        # the gated collection waits at the gate (a later group's may join it).
        pipeline.wait_until(lambda: writes_waiting(pipeline) >= 1, 60, "a write at the gate")
        with pipeline.handle.engine.connect() as conn:
            claimed = conn.execute(
                text(
                    "SELECT count(*) FROM job_batches"
                    " WHERE job_id = ANY(:ids) AND claimed_at IS NOT NULL"
                ),
                {"ids": job_ids},
            ).scalar_one()
        assert claimed > 1, claimed
        worker.kill()
        pipeline.wait_until(lambda: writes_waiting(pipeline) == 0, 30, "the dead session gone")
        gate.execute("SELECT pg_advisory_unlock(%s)", (WRITE_GATE,))

    # The reconciler of a new worker re-sends what the dead one held; the queued messages of
    # the rest are delivered as usual.
    pipeline.start_worker()
    for job_id in job_ids:
        status = pipeline.handle.wait_job(job_id)
        assert (status["status"], status["done"], status["failed"]) == (
            "completed",
            TEXTS_PER_JOB,
            0,
        ), status
    audit = f"vectors_{pipeline.collection}_writes"
    with pipeline.handle.engine.connect() as conn:
        writes: Counter[int] = Counter(
            dict(conn.execute(text(f"SELECT id, count(*) FROM {audit} GROUP BY id")).all()).values()
        )
        for collection in (pipeline.collection, twin):
            stored = conn.execute(text(f"SELECT count(*) FROM vectors_{collection}")).scalar_one()
            assert stored == JOBS // 2 * TEXTS_PER_JOB
    # Each item of the gated collection committed once: the killed group's writes died
    # uncommitted.
    assert writes == {1: JOBS // 2 * TEXTS_PER_JOB}, writes


# Loaded into a worker process (sitecustomize): a text holding POISON ends the process at once,
# as the kernel's OOM killer or a crash in the runtime would, every time it is embedded.
POISON_HOOK = """
import os
import signal

from workers.engine import embedder as _embedder

_run = _embedder.Embedder.run


def _run_or_die(self, prepared, *args, **kwargs):
    if any("POISON" in text for text in prepared.texts):
        os.kill(os.getpid(), signal.SIGKILL)
    return _run(self, prepared, *args, **kwargs)


_embedder.Embedder.run = _run_or_die
"""


def test_a_text_that_kills_its_worker_fails_alone(
    private_pipeline: Callable[..., PrivatePipeline], tmp_path: Path
) -> None:
    """Small jobs submitted beside one whose text kills the worker every time: the poison job's
    batch spends its attempts and fails with the reason; every other job completes without
    spending an attempt on the poison's account."""
    max_attempts = 2
    pipeline = private_pipeline(
        "poisoned",
        max_task_attempts=max_attempts,
        requeue_grace_s=1.0,
        reconcile_interval_s=0.5,
    )
    corpus = [t for _, t in load_demo_corpus()]
    job_ids = []
    for job in range(JOBS):
        items = [
            {"id": f"j{job}-{i}", "text": corpus[(job * TEXTS_PER_JOB + i) % len(corpus)]}
            for i in range(TEXTS_PER_JOB)
        ]
        if job == JOBS // 3:
            items[1]["text"] = "POISON " + items[1]["text"]
        response = pipeline.handle.submit(pipeline.collection, items)
        assert response.status_code == 202, response.text
        job_ids.append(response.json()["job_id"])
    poison_job = job_ids[JOBS // 3]
    hook_dir = tmp_path / "poison-hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(POISON_HOOK)
    settings = pipeline.handle.settings
    env = process_env(settings, {"PYTHONPATH": f"{hook_dir}{os.pathsep}{os.getcwd()}"})

    def unfinished() -> int:
        with pipeline.handle.engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND finished_at IS NULL"),
                    {"ids": job_ids},
                ).scalar_one()
            )

    def unfinished_batches() -> str:
        with pipeline.handle.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT b.job_id, b.sends, b.sent_at - j.created_at,"
                    " b.claimed_at - j.created_at, b.claimed_by, b.delivered_send"
                    " FROM job_batches b JOIN jobs j ON j.id = b.job_id"
                    " WHERE b.job_id = ANY(:ids) AND b.finished_at IS NULL"
                ),
                {"ids": job_ids},
            ).all()
        return "\n".join(str(tuple(r)) for r in rows)

    deaths = 0
    while unfinished():
        worker = ChildProcess(
            f"worker{deaths}", ["worker"], env, pipeline.handle.log_dir / f"worker{deaths}.log"
        )
        pipeline.handle.children.append(worker)
        try:
            pipeline.wait_until(
                lambda w=worker: not w.alive() or not unfinished(),
                120,
                "a death or every job finished",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- unfinished batches\n{unfinished_batches()}") from None
        if not worker.alive():
            deaths += 1
            # Its shared try and each of its own attempts cost the poison batch one worker.
            assert deaths <= max_attempts + 1, f"worker died {deaths} times"

    for job_id in job_ids:
        status = pipeline.handle.wait_job(job_id)
        if job_id == poison_job:
            # The batch's three texts were in the engine call that died: they fail together.
            assert (status["status"], status["failed"]) == ("failed", TEXTS_PER_JOB), status
        else:
            assert (status["status"], status["done"]) == ("completed", TEXTS_PER_JOB), status
    with pipeline.handle.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT job_id::text, max(attempts), max(error) FROM job_items"
                " WHERE job_id = ANY(:ids) GROUP BY job_id"
            ),
            {"ids": job_ids},
        ).all()
    spent = {job_id: (attempts, error) for job_id, attempts, error in rows}
    assert deaths == max_attempts + 1
    assert spent[poison_job][0] == max_attempts
    assert f"gave up after {max_attempts} attempts" in spent[poison_job][1]
    # The others spent one attempt at most: their own delivery, never one beside the poison.
    assert max(a for j, (a, _) in spent.items() if j != poison_job) <= 1, spent
