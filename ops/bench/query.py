"""`embedq bench query`: latency of single-text /v1/embeddings and /search calls (and, with a
reranker, /v1/rerank of 20 and 100 candidates) through the real API and real workers, idle
and while a bulk job is being embedded, in one run; the bulk phase once per preemption setting
(EMBEDQ_MAX_PREEMPTIONS_PER_BATCH), with the bulk job's own throughput beside it."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from embedq_core.manifest import ModelManifest
from embedq_core.settings import Settings
from ops.bench.engine import machine_description, machine_label, source_commit
from ops.bench.stack_setup import prepare_bench_database
from ops.data.corpus import load_bench_corpus, load_bench_passages, load_demo_corpus
from ops.devstack.processes import ChildProcess, start_api, start_worker
from ops.devstack.stack import EmbeddedStack

COLLECTION = "bench_query"
FINISHED = {"completed", "completed_with_errors", "failed"}
QUERIES = [text for _, text in load_demo_corpus()[1::7]]
RERANK_COUNTS = (20, 100)  # candidates per /v1/rerank call, by default


@dataclass
class LatencyRow:
    """One line of the table: an endpoint in one phase."""

    endpoint: str
    phase: str
    preemptions: int  # the worker's max_preemptions_per_batch
    max_batch_tokens: int  # the worker's engine batch budget
    calls: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class BulkRow:
    """The bulk job of one worker setting, timed from submission to its end."""

    preemptions: int
    max_batch_tokens: int
    texts: int
    seconds: float
    texts_per_s: float


def _row(endpoint: str, phase: str, worker: tuple[int, int], seconds: list[float]) -> LatencyRow:
    ms = np.array(seconds) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return LatencyRow(
        endpoint, phase, *worker, len(ms), float(p50), float(p95), float(p99), float(ms.max())
    )


def _rerank_endpoint(count: int) -> str:
    return f"/v1/rerank ({count} candidates)"


def _rerank_count(endpoint: str) -> int:
    return int(endpoint.removeprefix("/v1/rerank (").split(" ", 1)[0])


def _call(client: httpx.Client, endpoint: str, text: str, reranker: str | None = None) -> float:
    body: dict[str, Any]
    if endpoint == "/v1/embeddings":
        path, body = endpoint, {"model": COLLECTION, "input": text, "input_type": "query"}
    elif endpoint == "/search":
        path, body = f"/v1/collections/{COLLECTION}/search", {"query": text, "k": 10}
    else:
        path = "/v1/rerank"
        candidates = [passage for _, passage in load_bench_passages(_rerank_count(endpoint))]
        body = {"model": reranker, "query": text, "documents": candidates}
        body["return_documents"] = False
    started = time.perf_counter()
    response = client.post(path, json=body)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def _wait(client: httpx.Client, job_ids: list[str], children: list[ChildProcess]) -> None:
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        for child in children:
            if not child.alive():
                raise RuntimeError(f"{child.name} died:\n{child.log_tail()}")
        if all(client.get(f"/v1/jobs/{j}").json()["status"] in FINISHED for j in job_ids):
            return
        time.sleep(0.2)
    raise TimeoutError(f"jobs {job_ids} did not finish")


def _submit(client: httpx.Client, items: list[dict[str, Any]], per_job: int) -> list[str]:
    job_ids = []
    for start in range(0, len(items), per_job):
        response = client.post(
            f"/v1/collections/{COLLECTION}/jobs", json={"items": items[start : start + per_job]}
        )
        response.raise_for_status()
        job_ids.append(response.json()["job_id"])
    return job_ids


def _measure_under_load(
    client: httpx.Client,
    job_ids: list[str],
    calls: int,
    endpoints: list[str],
    reranker: str | None,
) -> tuple[dict[str, list[float]], bool]:
    """Alternate the endpoints until `calls` each or the bulk jobs end; say if they ended."""
    seconds: dict[str, list[float]] = {endpoint: [] for endpoint in endpoints}
    for i in range(calls):
        for endpoint in seconds:
            text = QUERIES[i % len(QUERIES)]
            seconds[endpoint].append(_call(client, endpoint, text, reranker))
        if i % 10 == 9:
            statuses = [client.get(f"/v1/jobs/{j}").json()["status"] for j in job_ids]
            if all(s in FINISHED for s in statuses):
                return seconds, True
    return seconds, False


def run_query_bench(
    settings: Settings, model_dir: Path, calls: int, bulk_texts: int, out_json: Path,
    console: Console, reranker_dir: Path | None = None, preemptions: tuple[int, ...] = (),
    rerank_counts: tuple[int, ...] = RERANK_COUNTS, budgets: tuple[int, ...] = (),
) -> list[LatencyRow]:  # fmt: skip
    """Idle latency, then latency while a bulk job of bulk_texts runs, on one worker (and one
    worker of the reranker beside it): the bulk phase once per engine batch budget (default: the
    settings') and preemption setting (default: the settings' value, then 0), each on a worker
    started with them."""
    corpus = [text for _, text in load_bench_corpus()]
    preemption_settings = preemptions or tuple(
        dict.fromkeys((settings.max_preemptions_per_batch, 0))
    )
    budget_settings = budgets or (settings.max_batch_tokens,)
    variants = [(p, b) for b in budget_settings for p in preemption_settings]
    rows: list[LatencyRow] = []
    bulk_rows: list[BulkRow] = []
    children: list[ChildProcess] = []
    with (
        tempfile.TemporaryDirectory() as data_dir,
        EmbeddedStack(settings, Path(data_dir)) as stack,
    ):
        logs = Path(data_dir) / "logs"
        database = prepare_bench_database(stack, model_dir, {COLLECTION: None})
        run_settings, manifest, api_key = database.settings, database.manifest, database.api_key
        try:
            children.append(start_api(run_settings, logs))
            endpoints = ["/v1/embeddings", "/search"]
            reranker = None
            if reranker_dir is not None:
                reranker_settings = run_settings.model_copy(update={"model_dir": reranker_dir})
                children.append(start_worker(reranker_settings, logs, name="reranker"))
                reranker = ModelManifest.read(reranker_dir).manifest_id
                endpoints += [_rerank_endpoint(n) for n in rerank_counts]
            client = httpx.Client(
                base_url=f"http://{run_settings.api_host}:{run_settings.api_port}",
                headers={"Authorization": f"Bearer {api_key}"},
                # A large reranker on a few cores takes long: wait as long as the API would.
                timeout=run_settings.query_timeout_s + 30,
            )
            for number, variant in enumerate(variants):
                preempt, budget = variant
                worker = start_worker(
                    run_settings.model_copy(
                        update={"max_preemptions_per_batch": preempt, "max_batch_tokens": budget}
                    ),
                    logs,
                    name=f"worker-preemptions-{preempt}-budget-{budget}",
                )
                children.append(worker)
                if number == 0:
                    rows += _idle_rows(
                        client, endpoints, calls, reranker, variant, children, console,
                        run_settings.max_items_per_job,
                    )  # fmt: skip
                console.print(
                    f"under a bulk job of {bulk_texts} texts, max_preemptions_per_batch={preempt},"
                    f" max_batch_tokens={budget} …"
                )
                bulk = [
                    {"id": f"bulk-{i}", "text": f"{corpus[i % len(corpus)]} #{i} v{number}"}
                    for i in range(bulk_texts)
                ]
                submitted = time.perf_counter()
                job_ids = _submit(client, bulk, run_settings.max_items_per_job)
                loaded, ended = _measure_under_load(client, job_ids, calls, endpoints, reranker)
                phase = "bulk job running" + (" (ended before the last calls)" if ended else "")
                rows += [_row(endpoint, phase, variant, s) for endpoint, s in loaded.items()]
                _wait(client, job_ids, children)
                seconds = time.perf_counter() - submitted
                bulk_rows.append(BulkRow(*variant, bulk_texts, seconds, bulk_texts / seconds))
                worker.stop()
                children.remove(worker)
        finally:
            for child in reversed(children):
                child.stop()
    _report(rows, bulk_rows, manifest, run_settings, reranker, bulk_texts, out_json, console)
    return rows


def _idle_rows(
    client: httpx.Client, endpoints: list[str], calls: int, reranker: str | None,
    worker: tuple[int, int], children: list[ChildProcess], console: Console, per_job: int,
) -> list[LatencyRow]:  # fmt: skip
    demo = [{"id": d, "text": t} for d, t in load_demo_corpus()]
    _wait(client, _submit(client, demo, per_job), children)
    for text in QUERIES[:5]:  # first calls open connections and caches
        _call(client, "/search", text)
    console.print(f"idle: {calls} calls per endpoint …")
    rows = []
    for endpoint in endpoints:
        _call(client, endpoint, QUERIES[0], reranker)  # the first call of a shape
        idle = [_call(client, endpoint, QUERIES[i % len(QUERIES)], reranker) for i in range(calls)]
        rows.append(_row(endpoint, "idle", worker, idle))
    return rows


def _report(
    rows: list[LatencyRow], bulk_rows: list[BulkRow], manifest: ModelManifest,
    run_settings: Settings, reranker: str | None, bulk_texts: int, out_json: Path,
    console: Console,
) -> None:  # fmt: skip
    table = Table(
        title=f"single-text query latency, {manifest.source} ({manifest.dimension}-d), one "
        f"worker, {machine_label(machine_description())}"
    )
    columns = (
        "endpoint", "phase", "preemptions", "batch tokens", "calls",
        "p50 ms", "p95 ms", "p99 ms", "max ms",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("endpoint", "phase") else "right")
    for r in rows:
        table.add_row(
            r.endpoint, r.phase, str(r.preemptions), str(r.max_batch_tokens), str(r.calls),
            *(f"{v:.1f}" for v in (r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms)),
        )  # fmt: skip
    console.print(table)
    bulk_table = Table(title="the bulk job while the calls ran")
    for column in ("preemptions", "batch tokens", "texts", "seconds", "texts/s"):
        bulk_table.add_column(column, justify="right")
    for b in bulk_rows:
        bulk_table.add_row(
            str(b.preemptions), str(b.max_batch_tokens), str(b.texts), f"{b.seconds:.1f}",
            f"{b.texts_per_s:.1f}",
        )  # fmt: skip
    console.print(bulk_table)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(
        json.dumps(
            {
                "commit": source_commit(),
                "machine": machine_description(),
                "model": manifest.source,
                "manifest_id": manifest.manifest_id,
                "precision": manifest.precision,
                "reranker": reranker,
                "settings": {
                    "max_batch_tokens": run_settings.max_batch_tokens,
                    "max_batch_size": run_settings.max_batch_size,
                    "items_per_task": run_settings.items_per_task,
                    "tokens_per_task": run_settings.tokens_per_task,
                    "intra_op_threads": run_settings.intra_op_threads,
                },
                "bulk_texts": bulk_texts,
                "rows": [asdict(r) for r in rows],
                "bulk": [asdict(b) for b in bulk_rows],
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {out_json}")
