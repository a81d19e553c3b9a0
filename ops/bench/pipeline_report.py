"""The pipeline bench's tables: each run against the bare engine beside it, the repeated runs'
medians, the CPU each part of the stack used, and the write path alone."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from ops.bench.cpu_share import ROLES
from ops.bench.pipeline_variants import median_ratios
from ops.bench.write_path import STORED_IDS

if TYPE_CHECKING:
    from ops.bench.pipeline import PipelineRun
    from ops.bench.write_path import WriteRow

# The worker's own stage times. A write behind the engine overlaps it, so the stages can sum to
# more than the wall time; "engine idle" is the wall time the engine did not run.
STAGES = ("claim", "tokenize", "engine", "write")
# stolen: the host ran other guests on these cores.
CPU_COLUMNS = (*ROLES, "idle", "stolen")


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    return table


def print_runs(console: Console, runs: list[PipelineRun], title: str) -> dict[str, float]:
    """Print every run, the repeated whole-path runs' medians and the CPU count of each
    whole-path run; returns each repeated variant's median ratio to the bare engine."""
    table = _table(
        title,
        (
            "variant",
            "texts",
            "seconds",
            "texts/s",
            "bare engine texts/s",
            "× bare engine",
            *STAGES,
            "engine idle",
        ),
    )
    for run in runs:
        split = [f"{run.split_s[s]:.1f}s" if s in run.split_s else "" for s in STAGES]
        idle_s = run.seconds - run.split_s.get("engine", 0.0)
        split.append(f"{idle_s:.1f}s" if run.split_s else "")
        table.add_row(
            run.variant,
            str(run.texts),
            f"{run.seconds:.1f}",
            f"{run.texts_per_s:.0f}",
            f"{run.engine_texts_per_s:.0f}",
            f"{run.ratio_to_engine:.2f}",
            *split,
        )
    console.print(table)
    whole_paths = [r for r in runs if r.engine_before_texts_per_s is not None]
    medians = median_ratios((r.group, r.ratio_to_engine) for r in whole_paths)
    if medians:
        median_table = _table(
            "repeated whole-path runs: median × bare engine",
            ("variant", "runs", "median × bare engine"),
        )
        for group, (n, median) in medians.items():
            median_table.add_row(group, str(n), f"{median:.2f}")
        console.print(median_table)
    # What shares the cores with the engine: the worker's own CPU includes the engine's threads.
    # A new collection's HNSW index is built after its bulk load; the bench waits for it before
    # the next run, so a build never runs into another measurement.
    cpu_table = _table(
        "CPU seconds used during each whole-path run, by part of the stack",
        ("variant", "wall × cores", *CPU_COLUMNS, "HNSW valid after"),
    )
    cores = os.cpu_count() or 1
    for run in runs:
        if run.cpu_s:
            cpu_table.add_row(
                run.variant,
                f"{run.seconds * cores:.1f}",
                *(f"{run.cpu_s[c]:.1f}" if c in run.cpu_s else "n/a" for c in CPU_COLUMNS),
                f"{run.index_ready_s:.1f}s" if run.index_ready_s is not None else "",
            )
    console.print(cpu_table)
    return {group: median for group, (_, median) in medians.items()}


def print_write_path(console: Console, results: list[WriteRow], title: str) -> None:
    """Rows/s of each way to write vectors, and each against executemany writing the same kind
    of rows (new ids, or ids already stored)."""
    table = _table(title, ("variant", "rows", "seconds", "rows/s", "vs executemany, same ids"))
    baseline = {
        STORED_IDS in r.variant: r.rows_per_s
        for r in results
        if r.variant.startswith("executemany")
    }
    for r in results:
        ratio = f"{r.rows_per_s / baseline[STORED_IDS in r.variant]:.2f}×"
        table.add_row(r.variant, str(r.rows), f"{r.seconds:.2f}", f"{r.rows_per_s:,.0f}", ratio)
    console.print(table)
