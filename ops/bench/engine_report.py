"""The engine bench's tables: one per corpus, every variant a row."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from ops.bench.engine import Row

COLUMNS = (
    "variant",
    "backend",
    "texts/s",
    "tokens/s",
    "× best peer",
    "cold texts/s",
    "mean cos",
    "min cos",
    "recall@10",
    "peak RSS MB",
    "% of peak",
)


def print_tables(
    console: Console, rows: list[Row], title: str, corpora: dict[str, tuple[int, int]]
) -> None:
    """A table per corpus; `corpora` maps a corpus to (texts, tokens)."""
    console.width = max(console.width, 190)  # a narrow pipe must not fold the figures
    for corpus, (n_texts, n_tokens) in corpora.items():
        table = Table(title=f"{title}: {corpus}, {n_texts} texts, {n_tokens} tokens")
        for column in COLUMNS:
            table.add_column(column, justify="left" if column in COLUMNS[:2] else "right")
        for row in (r for r in rows if r.corpus == corpus):
            table.add_row(
                row.label + (" [default here]" if row.is_default else ""),
                row.backend,
                f"{row.texts_per_s:.1f}",
                f"{row.tokens_per_s:.0f}",
                "" if row.ratio_to_best_peer is None else f"{row.ratio_to_best_peer:.2f}×",
                f"{row.cold_texts_per_s:.1f}",
                f"{row.mean_cos:.5f}",
                f"{row.min_cos:.5f}",
                f"{row.recall_at_10:.3f}",
                f"{row.peak_rss_mb:.0f}",
                "" if row.share_of_peak is None else f"{row.share_of_peak:.1%} {row.arithmetic}",
            )
        console.print(table)
