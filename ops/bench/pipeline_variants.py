"""The whole-path runs of `embedq bench pipeline`, and the medians of repeated ones."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Variant:
    """One whole-path run's set-up."""

    label: str
    collection: str
    write_behind: bool
    hnsw: bool = False
    texts: int | None = None  # the first this many bench texts (None: all)
    texts_per_job: int | None = None  # None: jobs as large as the API takes
    coalesce_below_items: int | None = None  # None: the settings' own
    engine_streams: int | None = None  # None: the settings' own
    claim_ahead: bool = True  # with write_behind: the engine on its own thread
    tokenise_ahead: bool | None = None  # None: the settings' own
    group: str = ""  # the label without its repeat number ("": the label)


def bench_variants(
    hnsw_variants: bool, small_jobs: tuple[int, int] | None, repeat: int, streams: bool
) -> list[Variant]:
    """The whole-path runs in order. The new-collection set (written in line; written behind;
    claimed ahead and written behind, the default; the same tokenising ahead; with `streams`,
    the same with two engine streams, which only OpenVINO runs) runs `repeat` times, reversing
    the order each time, so a ratio is not one run's luck on a noisy machine."""
    variants: list[Variant] = []
    for k in range(repeat):
        suffix = f" (run {k + 1} of {repeat})" if repeat > 1 else ""
        ahead = "whole path, claim ahead, write behind"
        repeated = [
            Variant("whole path, write in line, new collection", f"bench_inline{k}", False),
            Variant(
                "whole path, write behind the engine, new collection",
                f"bench_behind{k}",
                True,
                claim_ahead=False,
            ),
            Variant(f"{ahead}, new collection", f"bench_ahead{k}", True),
            Variant(
                f"{ahead}, tokenise ahead, new collection",
                f"bench_tokenise{k}",
                True,
                tokenise_ahead=True,
            ),
        ]
        if streams:
            repeated.append(
                Variant(
                    f"{ahead}, 2 engine streams, new collection",
                    f"bench_streams{k}",
                    True,
                    engine_streams=2,
                )
            )
        for each in repeated[:: -1 if k % 2 else 1]:
            variants.append(replace(each, label=each.label + suffix, group=each.label))
    if hnsw_variants:  # a live table that already has its index: every insert pays a search
        variants += [
            Variant(
                "whole path, write in line, HNSW-indexed table", "bench_inline_ix", False, True
            ),
            Variant(
                "whole path, claim ahead, write behind, HNSW-indexed table",
                "bench_behind_ix",
                True,
                True,
            ),
        ]
    if small_jobs is not None:  # a burst of small jobs, as a live product submits them
        small, per_job = small_jobs
        label = f"{small} texts as {-(-small // per_job)} jobs of {per_job}"
        variants += [
            Variant(
                f"{label}, one batch per delivery", "bench_small", True, False, small, per_job, 0
            ),
            Variant(
                f"{label}, small batches coalesced", "bench_small_co", True, False, small, per_job
            ),
        ]
    return variants


def median_ratios(runs: Iterable[tuple[str, float]]) -> dict[str, tuple[int, float]]:
    """(group, ratio) pairs -> each repeated group's number of runs and median ratio."""
    ratios: dict[str, list[float]] = {}
    for group, ratio in runs:
        ratios.setdefault(group, []).append(ratio)
    return {g: (len(r), statistics.median(r)) for g, r in ratios.items() if len(r) > 1}
