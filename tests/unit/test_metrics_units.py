"""The pieces of the metrics: attribution of engine work by thread, the worker's listener and
its token, route templates for the API's request metrics."""

from __future__ import annotations

import threading

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from api.body_limit import BodyBudget, BodyLimit
from api.request_metrics import HttpMetrics, RequestMetrics
from embedq_core.metrics_auth import metrics_authorized
from workers.telemetry import listener as metrics_listener
from workers.telemetry import metrics
from workers.telemetry import series as metric_series


def _value(name: str, **labels: str) -> float:
    value = metric_series.REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _labels(**extra: str) -> dict[str, str]:
    return {"model": "", "backend": "", "device": "", **extra}


def test_engine_work_is_attributed_to_the_batch_on_its_thread() -> None:
    observer = metrics.EngineMetrics()
    job = _labels(work="job")
    before_texts = _value("embedq_worker_texts_embedded_total", **job)
    before_reembed = _value("embedq_worker_texts_embedded_total", **_labels(work="reembed"))
    before_query = _value("embedq_worker_texts_embedded_total", **_labels(work="query"))
    before_count = _value("embedq_worker_batch_stage_seconds_count", **_labels(stage="engine"))
    timer = metrics.start_batch()
    observer.prepared(4, 0.25, urgent=False)
    observer.engine_batch(4, 30, 40, 0.5, urgent=False)
    # A live query on another thread meanwhile: not this batch's time, not job work.
    query = threading.Thread(target=observer.engine_batch, args=(2, 10, 10, 2.0, True))
    query.start()
    query.join()
    metrics.batch_stored(_Outcome(done=4, failed=0, unchanged=1, superseded=0))
    timer.finish()
    observer.engine_batch(3, 9, 12, 0.1, urgent=False)  # no batch on the thread: a migration

    assert _value("embedq_worker_texts_embedded_total", **job) == before_texts + 4
    assert _value("embedq_worker_texts_embedded_total", **_labels(work="query")) == (
        before_query + 2
    )
    assert _value("embedq_worker_texts_embedded_total", **_labels(work="reembed")) == (
        before_reembed + 3
    )
    assert _value("embedq_worker_padding_ratio", **job) == 0.25
    assert _value("embedq_worker_engine_tokens_per_second", **job) == 60
    engine = _labels(stage="engine")
    assert _value("embedq_worker_batch_stage_seconds_count", **engine) == before_count + 1
    assert _value("embedq_worker_batch_stage_seconds_bucket", **engine, le="0.5") >= 1
    assert _value("embedq_worker_items_total", **_labels(result="unchanged")) >= 1


class _Outcome:
    def __init__(self, done: int, failed: int, unchanged: int, superseded: int) -> None:
        self.done = done
        self.failed = failed
        self.unchanged = unchanged
        self.superseded = superseded


def test_the_listener_answers_metrics_only_with_the_token_and_health_by_readiness() -> None:
    ready = threading.Event()
    registry = CollectorRegistry()
    listener = metrics_listener.MetricsListener("127.0.0.1", 0, registry, "s3cret", ready.is_set)
    listener.start()
    try:
        url = f"http://127.0.0.1:{listener.port}"
        assert httpx.get(f"{url}/healthz").status_code == 503
        ready.set()
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 401
        wrong = {"Authorization": "Bearer s3cre"}
        assert httpx.get(f"{url}/metrics", headers=wrong).status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        assert httpx.get(f"{url}/metrics", headers=right).status_code == 200
        assert httpx.get(f"{url}/other", headers=right).status_code == 404
    finally:
        listener.stop()


def test_token_check() -> None:
    assert metrics_authorized("", None)
    assert metrics_authorized("bearer t", "t") and metrics_authorized("Bearer  t ", "t")
    assert not metrics_authorized("Basic t", "t") and not metrics_authorized("Bearer", "t")


def test_requests_are_labelled_by_route_template_even_when_refused_before_routing() -> None:
    app = FastAPI()

    @app.post("/v1/jobs/{job_id}")
    def post(job_id: str) -> dict[str, str]:
        return {"job_id": job_id}

    registry = CollectorRegistry()
    app.add_middleware(
        BodyLimit, max_bytes=1024, timeout_s=5, budget=BodyBudget(4096), retry_after_s=1
    )
    app.add_middleware(RequestMetrics, metrics=HttpMetrics(registry), routes=lambda: app.routes)
    client = TestClient(app)
    assert client.post("/v1/jobs/abc", content=b"{}").status_code == 200
    assert client.post("/v1/jobs/xyz", content=b"x" * 2000).status_code == 413
    assert client.get("/nowhere/123").status_code == 404
    assert client.request("BREW", "/v1/jobs/abc").status_code == 405

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    route = {"method": "POST", "route": "/v1/jobs/{job_id}"}
    assert sample("embedq_http_requests_total", **route, status="200") == 1
    assert sample("embedq_http_requests_total", **route, status="413") == 1
    assert sample("embedq_http_request_size_bytes_sum", **route) == 2
    assert (sample("embedq_http_response_size_bytes_sum", **route) or 0) > 0
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert sample("embedq_http_requests_total", **unmatched) == 1
    other = {"method": "other", "route": "/v1/jobs/{job_id}", "status": "405"}
    assert sample("embedq_http_requests_total", **other) == 1
    assert b"/v1/jobs/abc" not in generate_latest(registry)


def test_device_label_names_the_visible_gpus_or_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert metrics.device_of("onnxruntime-cuda") == "cuda:0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert metrics.device_of("onnxruntime-cuda") == "cuda:2"
    for backend in ("openvino-bf16", "openvino-fp32", "onnxruntime-cpu"):
        assert metrics.device_of(backend) == "cpu"
