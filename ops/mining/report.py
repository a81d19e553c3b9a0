"""The closing table of `embedq mine`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ops.mining.run import MineRequest, MineSummary

# Line numbers listed before "and N more".
SHOWN = 10


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def print_summary(console: Console, request: MineRequest, summary: MineSummary) -> None:
    """What was written, what was left out and why, and how fast."""
    params = request.params
    table = Table(title=f"embedq mine: {request.collection} -> {request.out}", show_header=False)
    table.add_row("query lines read", str(summary.lines))
    table.add_row("training lines written", str(summary.written))
    table.add_row(
        "lines short of negatives",
        f"{summary.short_of_negatives} (fewer than {params.negatives} allowed candidates)",
    )
    band = summary.dropped_by_band / summary.in_range if summary.in_range else 0.0
    table.add_row(
        "candidates in range / dropped by band",
        f"{summary.in_range} / {summary.dropped_by_band} ({band:.1%})",
    )
    table.add_row("texts embedded by the fleet now", str(summary.embedded_now))
    if summary.embed_s:
        table.add_row("embedding (s)", f"{summary.embed_s:.1f}")
    if summary.lines_mined_now and summary.mine_s:
        rate = summary.lines_mined_now / summary.mine_s
        table.add_row("mining (s) / query lines per s", f"{summary.mine_s:.1f} / {rate:.1f}")
    console.print(table)
    if summary.without_negatives:
        console.print(
            f"[yellow]{len(summary.without_negatives)} line(s) left out, no candidate in the "
            "range passed the band (FlagEmbedding cannot train on a line without negatives): "
            f"lines {_listed([str(n) for n in summary.without_negatives])}"
        )
    if summary.missing_positives:
        console.print(
            f"[yellow]{len(summary.missing_positives)} line(s) left out, pos_ids not in "
            f"{request.collection}: {_listed(summary.missing_positives)}"
        )
