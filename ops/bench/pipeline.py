"""`embedq bench pipeline`: the whole path (HTTP submit → Redis → worker → pgvector) against the
bare engine on the same texts, in one run, with the time split the worker itself measured."""

from __future__ import annotations

import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from embedq_core.api_keys import create_key
from embedq_core.catalog import Collection, create_collection, register_model_dir
from embedq_core.collection_index import hnsw_index_name
from embedq_core.db import make_engine
from embedq_core.manifest import ModelManifest
from embedq_core.settings import Settings
from migrations.schema_upgrade import upgrade_head
from ops.bench import cpu_share
from ops.bench.pipeline_reference import api_task_numbers, bare_engine, bench_texts
from ops.bench.pipeline_variants import Variant, bench_variants
from ops.devstack.processes import ChildProcess, start_api, start_worker
from ops.devstack.stack import EmbeddedStack, free_port
from workers.engine import EngineConfig
from workers.engine.backend_choice import choose_backend
from workers.engine.hardware import detect_hardware

FINISHED = {"completed", "completed_with_errors", "failed"}
STAGE_RE = re.compile(r'^embedq_worker_batch_stage_seconds_sum\{[^}]*stage="(\w+)"[^}]*\} (\S+)$')


@dataclass
class PipelineRun:
    """One variant's texts/s, and where the worker's time went."""

    variant: str
    texts: int
    seconds: float
    texts_per_s: float
    ratio_to_engine: float = 1.0
    # The bare engine's texts/s (all texts in one call) this run's ratio is against.
    engine_texts_per_s: float = 0.0
    # A whole-path run's one-call bare runs nearest before and after it (their mean is
    # engine_texts_per_s); None for the bare runs themselves.
    engine_before_texts_per_s: float | None = None
    engine_after_texts_per_s: float | None = None
    group: str = ""  # the variant without its repeat number (a bare run: its label)
    split_s: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    # A new collection's HNSW index: valid this long after its last job finished.
    index_ready_s: float | None = None


@dataclass(frozen=True)
class WholePath:
    """One whole-path run: wall seconds, the worker's stage sums, CPU seconds by part of the
    stack, and when a new collection's HNSW index was ready (None when it had one already)."""

    seconds: float
    split_s: dict[str, float]
    cpu_s: dict[str, float]
    index_ready_s: float | None


def _stage_sums(metrics_text: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for line in metrics_text.splitlines():
        match = STAGE_RE.match(line)
        if match:
            sums[match[1]] = sums.get(match[1], 0.0) + float(match[2])
    return sums


def whole_path(
    settings: Settings,
    model_dir: Path,
    texts: list[str],
    collection: str,
    log_dir: Path,
    api: ChildProcess,
    hnsw: bool = False,
    texts_per_job: int | None = None,
) -> WholePath:
    """Seconds from the first submission to the last job completed, the worker's stage sums
    (queue wait, claim, tokenize, engine, write) and the CPU seconds each part of the stack used
    over that run, on a worker that has embedded the same texts once before, untimed (the bare
    engine is timed warm too). `api` serves every run: what the variants change is the
    worker's. Returns once a new collection's HNSW index is built, so the
    build does not run into the next measurement."""
    engine = make_engine(settings.require_database_url(), pool_size=1)
    with engine.begin() as conn:
        manifest = register_model_dir(conn, model_dir)
        _, api_key = create_key(conn, "bench")
    created = _new_collection(engine, collection, manifest.manifest_id, hnsw)
    # Indexed from the start, so no HNSW build follows the warm-up into the measurement.
    _new_collection(engine, f"{collection}_warm", manifest.manifest_id, hnsw=True)
    engine.dispose()
    worker = start_worker(settings, log_dir)
    children = [api, worker]
    try:
        client = httpx.Client(
            base_url=f"http://{settings.api_host}:{settings.api_port}",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=120,
        )
        per_job = texts_per_job or settings.max_items_per_job
        # A fresh worker runs each batch shape (texts x padded width) for the first time, and
        # OpenVINO's first run of a shape is slower (probe, MiniLM: 83 shapes took 3.8-4.0 s on
        # their first run, 3.3-3.5 s on their second). The bare engine is timed on its second
        # pass over the texts; a worker that has served jobs for a while has met the shapes.
        _wait(client, _submit(client, f"{collection}_warm", texts, per_job), children)
        metrics_url = f"http://{settings.worker_metrics_host}:{settings.worker_metrics_port}"
        before = _stage_sums(httpx.get(f"{metrics_url}/metrics", timeout=10).text)
        roles = {
            os.getpid(): "bench client",
            api.popen.pid: "api",
            worker.popen.pid: "worker",
        }
        cpu_before = cpu_share.snapshot(roles)
        started = time.time()  # wall clock: compared with Postgres's finished_at, same machine
        job_ids = _submit(client, collection, texts, per_job)
        _wait(client, job_ids, children)
        cpu = cpu_share.used_between(cpu_before, cpu_share.snapshot(roles))
        # When the last job finished, as Postgres recorded it: the client's polling interval
        # is not part of the pipeline's time.
        engine = make_engine(settings.require_database_url(), pool_size=1)
        with engine.connect() as conn:
            finished = conn.exec_driver_sql(
                "SELECT extract(epoch FROM max(finished_at)) FROM jobs WHERE id = ANY(%(ids)s)",
                {"ids": [uuid.UUID(j) for j in job_ids]},
            ).scalar_one()
        seconds = float(finished) - started
        after = _stage_sums(httpx.get(f"{metrics_url}/metrics", timeout=10).text)
        index_ready_s = None
        if not hnsw:
            _wait_for_index(engine, hnsw_index_name(created.vector_table), children)
            index_ready_s = time.time() - float(finished)
        engine.dispose()
    finally:
        worker.stop()
    split = {stage: after.get(stage, 0.0) - before.get(stage, 0.0) for stage in after}
    return WholePath(seconds, split, cpu, index_ready_s)


def _new_collection(engine: Engine, name: str, manifest_id: str, hnsw: bool) -> Collection:
    """A new collection; hnsw: with its HNSW index already there (every insert pays a graph
    search), as a live table has it."""
    created = create_collection(engine, name, manifest_id)
    if hnsw:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE INDEX {hnsw_index_name(created.vector_table)} ON {created.vector_table}"
                " USING hnsw (embedding vector_ip_ops)"
            )
    return created


def _submit(client: httpx.Client, collection: str, texts: list[str], per_job: int) -> list[str]:
    """Submit texts as jobs of per_job texts; their job ids."""
    job_ids = []
    for i in range(0, len(texts), per_job):
        items = [{"id": f"t{j}", "text": texts[j]} for j in range(i, min(i + per_job, len(texts)))]
        response = client.post(f"/v1/collections/{collection}/jobs", json={"items": items})
        response.raise_for_status()
        job_ids.append(response.json()["job_id"])
    return job_ids


def _wait_for_index(engine: Engine, index_name: str, children: list[ChildProcess]) -> None:
    """Wait until the worker's maintenance thread has built index_name (it looks every
    reembed_index_poll_interval_s: a drained collection is built on the next look)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        for child in children:
            if not child.alive():
                raise RuntimeError(f"{child.name} died:\n{child.log_tail()}")
        with engine.connect() as conn:
            valid = conn.exec_driver_sql(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid"
                " WHERE x.relname = %(name)s",
                {"name": index_name},
            ).scalar()
        if valid:
            return
        time.sleep(0.2)
    raise TimeoutError(f"index {index_name} was not built in 600 s")


def _wait(client: httpx.Client, job_ids: list[str], children: list[ChildProcess]) -> None:
    deadline = time.monotonic() + 3600
    pending = list(job_ids)
    while pending and time.monotonic() < deadline:
        for child in children:
            if not child.alive():
                raise RuntimeError(f"{child.name} died:\n{child.log_tail()}")
        job: dict[str, Any] = client.get(f"/v1/jobs/{pending[0]}").json()
        if job["status"] in FINISHED:
            if job["status"] != "completed":
                raise RuntimeError(f"job {pending[0]} ended {job['status']}: {job['errors'][:3]}")
            pending.pop(0)
        else:
            time.sleep(0.5)  # a client polling twice a second, as a dashboard would
    if pending:
        raise TimeoutError(f"jobs {pending} did not finish")


def streams_run_here(model_dir: Path, config: EngineConfig) -> bool:
    """Whether this machine's engine for the model is OpenVINO, the one runtime that runs more
    than one engine stream (elsewhere the bench leaves that variant out)."""
    manifest = ModelManifest.read(model_dir)
    return choose_backend(config.runtime, manifest, detect_hardware()).kind.startswith("openvino")


def run_pipeline_bench(
    settings: Settings,
    model_dir: Path,
    count: int,
    hnsw_variants: bool,
    small_jobs: tuple[int, int] | None = None,
    repeat: int = 1,
) -> list[PipelineRun]:
    """The bare engine, then the whole path on a fresh embedded stack, on the same texts;
    small_jobs=(texts, per job): also that many of them submitted as a burst of small jobs,
    one batch per delivery and coalesced; repeat: runs of each new-collection variant."""
    texts = bench_texts(count)
    config = EngineConfig.from_settings(settings)
    # The ratio is against all texts in one call, the engine's best; the worker's chunks (one
    # task each) show what cutting a job into tasks costs the engine alone. Both run before and
    # after the pipelines, and the one-call run also between whole-path runs: each whole-path
    # run is compared with the mean of the bare one-call runs nearest before and after it
    # (for the first: the one before the stack starts), so this shared
    # machine's drift over the bench's minutes (one run: 369 texts/s before, 323 after) moves
    # both sides of its ratio alike.
    tasks = api_task_numbers(texts, settings)
    bare = [
        (f"bare engine, all {count} texts in one call", [0] * count),
        (f"bare engine, one call per task ({max(tasks) + 1} tasks, as the API cuts them)", tasks),
    ]

    def bare_runs(when: str) -> list[PipelineRun]:
        runs = []
        for label, numbers in bare:
            seconds = bare_engine(model_dir, config, texts, numbers)
            runs.append(
                PipelineRun(f"{label} ({when})", count, seconds, count / seconds, group=label)
            )
        return runs

    before = bare_runs("before")
    with (
        tempfile.TemporaryDirectory() as data_dir,
        EmbeddedStack(settings, Path(data_dir)) as stack,
    ):
        run_settings = stack.settings().model_copy(
            update={
                "model_dir": model_dir,
                "api_port": free_port(),
                "worker_metrics_port": free_port(),
                "worker_metrics_host": "127.0.0.1",
            }
        )
        upgrade_head(run_settings.require_database_url())
        api = start_api(run_settings, Path(data_dir))
        try:
            variants = bench_variants(
                hnsw_variants, small_jobs, repeat, streams_run_here(model_dir, config)
            )
            pipelines, bare_between_texts_per_s = _whole_path_runs(
                run_settings, model_dir, texts, variants, Path(data_dir), api, config, before[0]
            )
        finally:
            api.stop()
    after = bare_runs("after")
    bare_between_texts_per_s.append(after[0].texts_per_s)
    engine_s = (before[0].seconds + after[0].seconds) / 2  # all texts in one call
    for bare_run in before + after:
        bare_run.engine_texts_per_s = count / engine_s
    for n, pipeline in enumerate(pipelines):
        pipeline.engine_before_texts_per_s = bare_between_texts_per_s[n]
        pipeline.engine_after_texts_per_s = bare_between_texts_per_s[n + 1]
        pipeline.engine_texts_per_s = (
            pipeline.engine_before_texts_per_s + pipeline.engine_after_texts_per_s
        ) / 2
    runs = before + pipelines + after
    for measured in runs:
        measured.ratio_to_engine = measured.texts_per_s / measured.engine_texts_per_s
    return runs


def _whole_path_runs(
    run_settings: Settings,
    model_dir: Path,
    texts: list[str],
    variants: list[Variant],
    data_dir: Path,
    api: ChildProcess,
    config: EngineConfig,
    one_call_before: PipelineRun,
) -> tuple[list[PipelineRun], list[float]]:
    """Each variant through the whole path, with a bare one-call run between two of them;
    returns the runs and the bare texts/s before each run (the first: one_call_before's)."""
    count = len(texts)
    pipelines: list[PipelineRun] = []
    bare_between_texts_per_s = [one_call_before.texts_per_s]
    for n, variant in enumerate(variants):
        if n:
            one_call_s = bare_engine(model_dir, config, texts, [0] * count)
            bare_between_texts_per_s.append(count / one_call_s)
        changes: dict[str, Any] = {
            "write_behind": variant.write_behind,
            "claim_ahead": variant.claim_ahead,
        }
        if variant.coalesce_below_items is not None:
            changes["coalesce_below_items"] = variant.coalesce_below_items
        if variant.engine_streams is not None:
            changes["engine_streams"] = variant.engine_streams
        if variant.tokenise_ahead is not None:
            changes["tokenise_ahead"] = variant.tokenise_ahead
        used = texts[: variant.texts] if variant.texts else texts
        run = whole_path(
            run_settings.model_copy(update=changes),
            model_dir,
            used,
            variant.collection,
            data_dir,
            api,
            hnsw=variant.hnsw,
            texts_per_job=variant.texts_per_job,
        )
        pipelines.append(
            PipelineRun(
                variant.label,
                len(used),
                run.seconds,
                len(used) / run.seconds,
                group=variant.group or variant.label,
                split_s=run.split_s,
                cpu_s=run.cpu_s,
                index_ready_s=run.index_ready_s,
            )
        )
    return pipelines, bare_between_texts_per_s
