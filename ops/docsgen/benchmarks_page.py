"""The benchmarks page (docs/benchmarks.md), rendered from the results JSON the bench commands
wrote under ops/bench/results/: each table with its machine, model and commit."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ops.export.quantize_reranker import RerankGate

PAGE = Path("docs") / "benchmarks.md"
RESULTS = Path("ops") / "bench" / "results"
INTRO = """# Benchmarks

Every table below is rendered from a results file under `ops/bench/results/` by
`embedq docs generate` (a test fails when this page and the files differ). Each `embedq bench`
command compares its variants in one run on one machine, prints a table and writes such a file;
the figures are of that machine, model and commit only. Run the commands on the machine type you
deploy before sizing a fleet ([Scaling and sizing](operations/scaling.md)).

{skip_marker}
```bash
embedq bench engine --shape bge-large-zh   # our engine against sentence-transformers
embedq bench pipeline                      # the whole path against the bare engine
embedq bench query                         # live-query latency, idle and under bulk load
embedq bench migrate                       # a re-embedding migration against the bare engine
embedq bench write-path                    # the vector writer: COPY against executemany
embedq bench rerank --shape bge-reranker-v2-m3   # our reranker against CrossEncoder
embedq bench mine                          # embedq mine's candidate search, HNSW against exact
embedq bench vectorize                     # a vectorizer's cost per INSERT and its lag
```

**Not measured here:** anything on a GPU, an AMX CPU for the engine, and the real weights of
bge-large-zh-v1.5 or BGE-M3 (no model hub on the build machine): shapes with random weights stand
in for them, which measures speed, not retrieval quality.
"""
SKIP_MARKER = (
    "<!-- example-skip: each takes 10 to 40 minutes on 2 cores; "
    "tests/e2e/test_benchmarks.py runs every bench command on small inputs -->"
)
Row = dict[str, Any]


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _machine(data: Row) -> str:
    machine = data.get("machine", {})
    isa = [flag for flag in ("amx_bf16", "avx512_bf16", "avx512_vnni") if machine.get(flag)]
    family = f", family {machine['cpu_family']}" if machine.get("cpu_family") else ""
    micro = data.get("peak", {}).get("microarchitecture")
    described = micro or f"{machine.get('cpu', '?')}{family}"
    flags = ", ".join(isa) if isa else "no AMX, AVX-512 BF16 or VNNI"
    return f"{machine.get('cores', '?')} cores of {described} ({flags})"


def _header(path: Path, data: Row, model: str) -> str:
    commit = data.get("commit", "unknown")
    note = data.get("commit_note")
    when = data.get("measured_at", "")
    lines = [
        f"- **machine**: {_machine(data)}",
        f"- **model**: {model}",
        f"- **commit**: `{commit}`"
        + (f"; {note}" if note else "")
        + (f"; measured {when}" if when else ""),
        f"- **file**: `{path.as_posix()}`",
    ]
    return "\n".join(lines)


def _engine(data: Row) -> tuple[str, str]:
    model = data["model"]
    if model.get("random_weights"):
        name = f"{model['stands_for']}'s shape, random weights"
    else:
        name = f"{model.get('fp32_manifest_id', model.get('stands_for'))}, real weights"
    tables = []
    for corpus, about in data["corpora"].items():
        rows = [
            [
                row["label"] + (" (default here)" if row.get("is_default") else ""),
                _num(row["texts_per_s"], 2 if row["texts_per_s"] < 10 else 1),
                _num(row["tokens_per_s"]),
                _num(row.get("ratio_to_best_peer"), 2),
                _num(row.get("mean_cos"), 5),
                _num(row.get("recall_at_10"), 3),
                f"{row['share_of_peak']:.0%} {row['arithmetic']}"
                if row.get("share_of_peak")
                else "",
                _num(row.get("peak_rss_mb")),
            ]
            for row in data["rows"]
            if row["corpus"] == corpus
        ]
        header = ["variant", "texts/s", "tokens/s", "× best peer", "mean cos", "recall@10"]
        title = f"{corpus}: {about['texts']} texts, {about['tokens']:,} tokens"
        tables.append(f"{title}\n\n" + _table([*header, "% of peak", "peak RSS MB"], rows))
    settings = (
        f"{data['threads']} threads, batches of at most {data['batch_size']} texts and "
        f"{data['max_batch_tokens']:,} padded tokens"
        + (
            " (a row that names a budget: that budget)"
            if any("@" in row["variant"] for row in data["rows"])
            else ""
        )
        + (
            f", sentence-transformers batches of {data['peer_batch_size']} texts"
            if data.get("peer_batch_size", data["batch_size"]) != data["batch_size"]
            else ""
        )
        + f", best of {data['timed_passes']} timed "
        "pass(es); × best peer is against the fastest sentence-transformers variant on the corpus; "
        "mean cos and recall@10 against sentence-transformers torch FP32; % of peak is useful "
        "FLOPs per second over cores × the cpuinfo clock × the arithmetic's operations per cycle "
        "(above 100%: the cores ran above the reported clock)."
    )
    return name, settings + "\n\n" + "\n\n".join(tables)


def _migrate(data: Row) -> tuple[str, str]:
    model = data["model"]
    rows = [
        [r["variant"], _num(r["rows"]), _num(r["seconds"], 2), _num(r["rows_per_s"]),
         _num(r["ratio_to_engine"], 2)]
        for r in data["results"]
    ]  # fmt: skip
    table = _table(["variant", "rows", "seconds", "rows/s", "× bare engine"], rows)
    return f"{model['source']} ({model['backend']})", f"Chunks of {data['chunk_size']}.\n\n{table}"


def _query(data: Row) -> tuple[str, str]:
    # Runs before the preemption setting existed have no `preemptions` field: a query then
    # waited for the bulk batch in flight, as with 0 now. Runs before the budget sweep ran
    # every phase at the settings' budget.
    budget = data["settings"]["max_batch_tokens"]
    rows = [
        [r["endpoint"], r["phase"], _num(r.get("preemptions", 0)),
         _num(r.get("max_batch_tokens", budget)), _num(r["calls"]),
         _num(r["p50_ms"]), _num(r["p95_ms"]), _num(r["p99_ms"]), _num(r["max_ms"])]
        for r in data["rows"]
    ]  # fmt: skip
    intro = f"Single-text calls, idle and while a {data['bulk_texts']:,}-text job runs"
    if data.get("precision"):
        intro += f" ({data['precision']} export)"
    if data.get("reranker"):
        # A reranker of a model-hub shape exported with random weights: speed, not quality.
        intro += f"; /v1/rerank served by a worker of `{data['reranker']}` beside it"
    columns = [
        "call", "while", "preemptions", "batch tokens", "calls", "p50 ms", "p95 ms", "p99 ms",
        "max ms",
    ]  # fmt: skip
    parts = [intro + ". " + _settings(data), _table(columns, rows)]
    if data.get("bulk"):
        bulk = [
            [_num(b["preemptions"]), _num(b.get("max_batch_tokens", budget)), _num(b["texts"]),
             _num(b["seconds"], 1), _num(b["texts_per_s"], 1)]
            for b in data["bulk"]
        ]  # fmt: skip
        parts += [
            "The bulk job itself, from submission to its end, while the calls ran:",
            _table(["preemptions", "batch tokens", "texts", "seconds", "texts/s"], bulk),
        ]
    return data["model"], "\n\n".join(parts)


def _settings(data: Row) -> str:
    return "Settings: " + ", ".join(f"`{k}` {v}" for k, v in data.get("settings", {}).items())


def _pipeline(data: Row) -> tuple[str, str]:
    runs = [
        [r["variant"], _num(r["texts"]), _num(r["seconds"], 1), _num(r["texts_per_s"]),
         _num(r["ratio_to_engine"], 2)]
        for r in data["runs"]
    ]  # fmt: skip
    medians = [[group, f"{ratio:.3f}"] for group, ratio in data["median_ratio_to_engine"].items()]
    parts = [
        _settings(data) + ".",
        _table(["run", "texts", "seconds", "texts/s", "× bare engine beside it"], runs),
        "Median of each variant's runs:",
        _table(["variant", "median × bare engine"], medians),
    ]
    if data.get("write_path"):
        writes = [
            [r["variant"], _num(r["rows"]), _num(r["seconds"], 2), _num(r["rows_per_s"])]
            for r in data["write_path"]
        ]
        parts += ["The write path alone:", _table(["variant", "rows", "seconds", "rows/s"], writes)]
    return Path(data["model_dir"]).name, "\n\n".join(parts)


def _rerank(data: Row) -> tuple[str, str]:
    model = data["model"]
    tables = []
    for length, about in data["pairs"].items():
        rows = [
            [row["label"], row["backend"], _num(row["pairs_per_s"], 2), _num(row["tokens_per_s"]),
             _num(row["ratio_to_best_peer"], 2), f"{row['max_abs_logit_error']:.1e}",
             _num(row["top10_agreement"], 2), _num(row["peak_rss_mb"])]
            for row in data["rows"]
            if row["length"] == length
        ]  # fmt: skip
        header = ["variant", "backend", "pairs/s", "tokens/s", "× best peer", "max abs logit error"]
        title = f"passages of {length}: {about['pairs']} pairs, {about['tokens']:,} tokens"
        tables.append(f"{title}\n\n" + _table([*header, "top-10 agreement", "peak RSS MB"], rows))
    settings = (
        f"{data['threads']} threads, batches of at most {data['batch_size']} pairs, best of "
        f"{data['repeats']} timed pass(es); fidelity against CrossEncoder torch FP32."
    )
    if data.get("peak_rss_note"):
        settings += f" {data['peak_rss_note']}"
    reasons = [f"- not run: {reason}" for reason in data.get("not_run", [])]
    not_run = "\n\n" + "\n".join(reasons) if reasons else ""
    quality = model.get("int8_quality")
    if quality:
        gate = RerankGate()
        passed = (
            quality["pair_agreement_vs_fp32"] >= gate.min_pair_agreement
            and quality["mean_score_error_vs_fp32"] <= gate.max_score_error
        )
        settings += (
            f" The INT8 export's own measurement on {_num(quality['held_out_pairs'])} held-out"
            f" pairs: pair agreement with FP32 {quality['pair_agreement_vs_fp32']:.3f}, mean score"
            f" error {quality['mean_score_error_vs_fp32']:.4f}; the export gate (agreement ≥"
            f" {gate.min_pair_agreement}, error ≤ {gate.max_score_error})"
            f" {'passes' if passed else 'refuses'} it."
        )
    return f"{model['stands_for']}'s shape, random weights", settings + not_run + "\n\n" + (
        "\n\n".join(tables)
    )


def _mine(data: Row) -> tuple[str, str]:
    rows = [
        [_num(r["rows"]), r["distribution"], r["variant"], _num(r["queries"]),
         _num(r["queries_per_s"]), _num(r["recall_of_exact"], 3), _num(r["index_build_s"])]
        for r in data["results"]
    ]  # fmt: skip
    header = ["rows", "vectors", "variant", "queries", "queries/s", "recall of exact", "build s"]
    intro = (
        f"{data['candidates_per_query']} candidates per query (the default `--range 2-200`), "
        f"{data['queries_per_block']} queries per statement, {data['dimension']}-d unit vectors "
        "(uniform: HNSW's hardest case; clustered: closer to real embeddings); build s: the HNSW "
        "index (m 16, ef_construction 64)."
    )
    return f"{data['dimension']}-d random unit vectors", intro + "\n\n" + _table(header, rows)


def _vectorize(data: Row) -> tuple[str, str]:
    overhead = [
        [r["table"], _num(r["inserts"]), _num(r["mean_ms"], 3), _num(r["p50_ms"], 3),
         _num(r["p95_ms"], 3)]
        for r in data["overhead"]
    ]  # fmt: skip
    lag = [
        [_num(r["target_rows_per_s"]), _num(r["achieved_rows_per_s"]), _num(r["rows"]),
         _num(r["lag_p50_s"], 2), _num(r["lag_p95_s"], 2), _num(r["lag_max_s"], 2)]
        for r in data["lag"]
    ]  # fmt: skip
    intro = (
        "Single-row INSERTs, autocommit, one client, no worker running (the trigger and the "
        "partial indexes only); then one worker and one client inserting sentence-length rows "
        f"at each rate for {data['duration_s']:g} s, a row's lag from its INSERT to the UPDATE "
        "writing its vector. " + _settings(data)
    )
    tables = _table(["table", "inserts", "mean ms", "p50 ms", "p95 ms"], overhead)
    tables += "\n\n" + _table(
        ["rows/s asked", "rows/s sent", "rows", "lag p50 s", "lag p95 s", "lag max s"], lag
    )
    return data["model"]["source"], intro + "\n\n" + tables


def _profile(data: Row) -> tuple[str, str]:
    categories = [[name, f"{share:.1%}"] for name, share in data["categories"].items()]
    categories.sort(key=lambda row: -float(row[1].rstrip("%")))
    top = [
        [r["node_type"], r["exec_type"], _num(r["nodes"]), _num(r["ms"]), f"{r['share']:.1%}"]
        for r in data["rows"][:10]
    ]
    intro = (
        f"OpenVINO's per-node counters, {data['precision']} export on {data['backend']}, "
        f"{data['texts']} bench passages ({data['tokens']:,} tokens) in {data['batches']} engine "
        f"batches, {data['threads']} threads, `max_batch_tokens` {data['max_batch_tokens']}."
    )
    return data["model"], "\n\n".join(
        [
            intro,
            _table(["category", "share"], categories),
            _table(["node type", "kernel", "nodes", "ms", "share"], top),
        ]
    )


def _chunking(data: Row) -> tuple[str, str]:
    rows = [
        [r["variant"], _num(r["documents"]), _num(r["chunks"]), _num(r["seconds"], 1),
         _num(r["documents_per_s"], 2), _num(r["chunks_per_s"], 1), _num(r["tokens_per_s"])]
        for r in data["rows"]
    ]  # fmt: skip
    low, high = data["document_chars"]
    chunking = data["chunking"]
    intro = (
        f"Documents of {low:,}–{high:,} characters (bench passages, mostly Chinese), chunks of "
        f"{chunking['max_tokens']} tokens overlapping by {chunking['overlap_tokens']}, through "
        "the API, one worker and Postgres; the client's pieces are exactly the worker's chunks."
    )
    columns = ["variant", "documents", "chunks", "seconds", "documents/s", "chunks/s", "tokens/s"]
    return data["model"], intro + "\n\n" + _table(columns, rows)


KINDS: dict[str, tuple[str, Callable[[Row], tuple[str, str]]]] = {
    "engine": ("The engine (`embedq bench engine`)", _engine),
    "pipeline": ("The whole path (`embedq bench pipeline`)", _pipeline),
    "query": ("Live queries (`embedq bench query`)", _query),
    "migrate": ("Re-embedding (`embedq bench migrate`)", _migrate),
    "rerank": ("Reranking (`embedq bench rerank`)", _rerank),
    "mine": ("Hard-negative mining (`embedq bench mine`)", _mine),
    "vectorize": ("Table vectorizers (`embedq bench vectorize`)", _vectorize),
    "chunking": ("Long documents (`embedq bench chunking`)", _chunking),
    "profile": ("Where the engine's time goes (`embedq bench profile`)", _profile),
}


def _kind(path: Path) -> str:
    return path.name.split("-", 1)[0]


def render_markdown(root: Path) -> str:
    """The page: a section per bench command, a table (or tables) per results file."""
    files = sorted((root / RESULTS).glob("*.json"))
    sections = [INTRO.format(skip_marker=SKIP_MARKER)]
    for kind, (title, render) in KINDS.items():
        sections.append(f"## {title}\n")
        for path in (f for f in files if _kind(f) == kind):
            data = json.loads(path.read_text(encoding="utf-8"))
            model, body = render(data)
            sections.append(
                f"### {path.stem}\n\n{_header(RESULTS / path.name, data, model)}\n\n{body}\n"
            )
    unknown = [f.name for f in files if _kind(f) not in KINDS]
    if unknown:
        raise ValueError(
            f"no renderer for {unknown}: name results <kind>-..., kind in {list(KINDS)}"
        )
    return "\n".join(sections)
