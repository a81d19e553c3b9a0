"""The metrics reference (docs/reference/metrics.md): every series the API and the workers
export, with its type, labels and help text, read from the metric definitions themselves."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

PAGE = Path("docs") / "reference" / "metrics.md"
INTRO = """# Metrics reference

Every series embedq exports, generated from the metric definitions by `embedq docs generate` (a
test fails when this page and the code differ). Counters are exposed with the `_total` suffix,
histograms as `_bucket`, `_sum` and `_count`. How to scrape them, what a scrape costs and the
alerts: [Metrics and alerts](../operations/metrics.md).
"""
SUFFIX = {"counter": "_total"}


def _row(name: str, kind: str, labels: Iterable[str], help_text: str) -> str:
    shown = f"`{name}{SUFFIX.get(kind, '')}`"
    label_cells = ", ".join(f"`{label}`" for label in labels) or ""
    return f"| {shown} | {kind} | {label_cells} | {help_text.replace('|', '/')} |"


def _defined(metric: Any) -> tuple[str, str, tuple[str, ...], str]:
    """Name, type, label names and help of a prometheus_client metric or metric family."""
    if hasattr(metric, "_labelnames") and hasattr(metric, "_documentation"):
        return metric._name, metric._type, tuple(metric._labelnames), metric._documentation
    family_labels = tuple(getattr(metric, "_labelnames", ()))
    return metric.name, metric.type, family_labels, metric.documentation


def _table(rows: Iterable[tuple[str, str, tuple[str, ...], str]], labels_title: str) -> list[str]:
    head = [f"| metric | type | {labels_title} | what |", "| --- | --- | --- | --- |"]
    return head + [_row(*row) for row in rows]


def _worker_metrics() -> list[Any]:
    from prometheus_client.metrics import MetricWrapperBase

    from workers.telemetry import series

    return [value for value in vars(series).values() if isinstance(value, MetricWrapperBase)]


def _api_metrics() -> list[Any]:
    from api.metrics import StoreMetrics, _families
    from api.request_metrics import HttpMetrics

    http = HttpMetrics(CollectorRegistry())
    store = StoreMetrics(engine=None, redis=None, cache_s=0.0, with_names=True)  # type: ignore[arg-type]
    request_series = [http.requests, http.latency, http.request_size, http.response_size]
    return [*request_series, http.in_progress, *_families().values(), *list(store.describe())[-3:]]


def render_markdown() -> str:
    """The page: the API's series, then a worker's."""
    from workers.telemetry.series import BASE_LABELS

    worker_note = (
        "Each worker process serves these on `EMBEDQ_WORKER_METRICS_PORT`. Every series also "
        "carries `model` (manifest id), `backend` and `device`; only the other labels are listed. "
        "`process_*` series (memory, CPU, open files) come with them."
    )
    worker_rows = [
        (name, kind, tuple(label for label in labels if label not in BASE_LABELS), help_text)
        for name, kind, labels, help_text in map(_defined, _worker_metrics())
    ]
    lines = [INTRO, "## API", "", "Served on the API's own port at `/metrics`.", ""]
    lines += _table(map(_defined, _api_metrics()), "labels")
    lines += ["", "## Workers", "", worker_note, ""]
    lines += _table(worker_rows, "other labels")
    return "\n".join(lines) + "\n"
