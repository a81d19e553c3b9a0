"""`embedq mine`: embed the queries through the fleet, find each one's candidates in pgvector,
sample negatives (ops/mining/sampling.py), add teacher scores if asked, and write FlagEmbedding's
training lines, resumably, with progress."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine

from embedq_core.catalog import Collection, candidate_models, get_collection
from embedq_core.db import make_engine
from embedq_core.query_protocol import serving_key
from embedq_core.queueing import make_celery, make_redis
from embedq_core.settings import Settings
from ops.mining import resume
from ops.mining.candidates import SearchPlan, nearest_rows, pair_scores, plan_search
from ops.mining.lines import QueryLine, file_digest, read_lines, text_key
from ops.mining.sampling import Mined, MiningParams, choose_negatives, ranked
from ops.mining.teacher import Teacher
from ops.mining.vectors import embed_missing, open_vectors_collection, vectors_collection_name

# Query lines searched per SQL statement and checkpointed together.
LINES_PER_BLOCK = 64
# Rows fetched beyond the range's end, for positives and copies of the query to be removed.
SPARE_CANDIDATES = 5


class MiningError(RuntimeError):
    """The run cannot start or go on; the message says what to change."""


@dataclass(frozen=True)
class MineRequest:
    """Everything `embedq mine` was asked, built at the entry point."""

    collection: str
    data: Path
    out: Path
    params: MiningParams
    exact: bool = False
    ef_search: int | None = None
    vectors_collection: str | None = None
    reranker: str | None = None
    api_url: str | None = None
    api_key: str | None = None
    overwrite: bool = False


@dataclass
class MineSummary:
    """What a run did, for the closing table."""

    lines: int = 0
    written: int = 0
    without_negatives: list[int] = field(default_factory=list)
    short_of_negatives: int = 0
    missing_positives: list[str] = field(default_factory=list)
    in_range: int = 0
    dropped_by_band: int = 0
    embedded_now: int = 0
    embed_s: float = 0.0
    mine_s: float = 0.0
    lines_mined_now: int = 0


@dataclass(frozen=True)
class _Setup:
    engine: Engine
    corpus: Collection
    vectors: Collection
    instruction: str


def _query_key(line: QueryLine, instruction: str) -> str:
    return text_key("q:", instruction + line.query)


def _setup(settings: Settings, request: MineRequest, console: Console) -> _Setup:
    engine = make_engine(settings.require_database_url())
    with engine.connect() as conn:
        corpus = get_collection(conn, request.collection)
        if corpus is None:
            raise MiningError(f"no collection {request.collection!r}")
        if corpus.chunking is not None:
            raise MiningError(
                f"{request.collection!r} is a chunking collection: mining reads one row per "
                "passage; mine an ordinary collection of the passages"
            )
        manifest = candidate_models(conn, corpus.manifest_id)[0]
    vectors = open_vectors_collection(
        engine, vectors_collection_name(corpus.name, request.vectors_collection), corpus
    )
    redis = make_redis(settings)
    try:
        if not redis.exists(serving_key(corpus.manifest_id)):
            console.print(
                f"[yellow]no worker serves {corpus.manifest_id} now: the queries wait in its "
                "queue until one starts (embedq worker with that model's directory)"
            )
    finally:
        redis.close()
    return _Setup(engine, corpus, vectors, manifest.query_instruction or "")


def _request_record(request: MineRequest, setup: _Setup) -> dict[str, Any]:
    """What must match for a rerun to continue an interrupted run's output."""
    return {
        "input_sha256": file_digest(request.data),
        "collection": setup.corpus.name,
        "manifest_id": setup.corpus.manifest_id,
        "params": asdict(request.params),
        "exact": request.exact,
        "ef_search": request.ef_search,
        "reranker": request.reranker,
    }


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def mine(settings: Settings, request: MineRequest, console: Console) -> MineSummary:
    """Run (or resume) one mining request; returns what it did."""
    lines = read_lines(request.data)
    params = request.params
    plan = plan_search(params.rank_last + SPARE_CANDIDATES, request.exact, request.ef_search)
    if request.reranker and not (request.api_url and request.api_key):
        raise MiningError("--reranker needs the API's address and a key (--api-url, --api-key)")
    setup = _setup(settings, request, console)
    summary = MineSummary(lines=len(lines))
    texts = {_query_key(line, setup.instruction): setup.instruction + line.query for line in lines}
    texts |= {text_key("p:", pos): pos for line in lines for pos in line.pos_texts}
    teacher = (
        Teacher(request.api_url or "", request.api_key or "", request.reranker)
        if request.reranker
        else None
    )
    record = _request_record(request, setup)
    handle, position = resume.open_output(request.out, record, request.overwrite)
    try:
        with _progress(console) as progress:
            started = time.perf_counter()
            summary.embedded_now = embed_missing(
                setup.engine, make_celery(settings), settings, setup.vectors, texts, progress
            )
            summary.embed_s = time.perf_counter() - started
            if position.lines_done:
                progress.console.print(
                    f"resuming after line {lines[position.lines_done - 1].number}"
                )
            task = progress.add_task("mining", total=len(lines), completed=position.lines_done)
            started = time.perf_counter()
            for start in range(position.lines_done, len(lines), LINES_PER_BLOCK):
                block = lines[start : start + LINES_PER_BLOCK]
                out = _mine_block(setup, block, plan, params, teacher, summary)
                handle.write(b"".join(out))
                position.lines_done = start + len(block)
                resume.checkpoint(handle, request.out, record, position)
                summary.lines_mined_now += len(block)
                progress.advance(task, len(block))
            summary.mine_s = time.perf_counter() - started
    finally:
        handle.close()
        if teacher is not None:
            teacher.close()
    resume.finish(request.out)
    summary.written = sum(1 for _ in request.out.open("rb"))
    return summary


def _positive_scores(
    setup: _Setup, block: list[QueryLine]
) -> dict[tuple[str, str], tuple[float, str]]:
    by_text = [
        (_query_key(line, setup.instruction), text_key("p:", pos))
        for line in block
        for pos in line.pos_texts
    ]
    by_id = [(_query_key(line, setup.instruction), pos) for line in block for pos in line.pos_ids]
    with setup.engine.connect() as conn:
        scores = pair_scores(conn, setup.vectors, setup.vectors, by_text)
        scores |= pair_scores(conn, setup.vectors, setup.corpus, by_id)
    return scores


def _mine_block(
    setup: _Setup,
    block: list[QueryLine],
    plan: SearchPlan,
    params: MiningParams,
    teacher: Teacher | None,
    summary: MineSummary,
) -> list[bytes]:
    keys = [_query_key(line, setup.instruction) for line in block]
    with setup.engine.begin() as conn:
        found = nearest_rows(conn, setup.corpus, setup.vectors, list(set(keys)), plan)
    scores = _positive_scores(setup, block)
    results: list[tuple[QueryLine, list[str], Mined]] = []
    for line, key in zip(block, keys, strict=True):
        if line.pos_ids:
            absent = [p for p in line.pos_ids if (key, p) not in scores]
            if absent:
                summary.missing_positives.append(f"line {line.number}: {', '.join(absent)}")
                continue
            positives = [scores[(key, p)][1] for p in line.pos_ids]
            pos_scores = [scores[(key, p)][0] for p in line.pos_ids]
        else:
            positives = list(line.pos_texts)
            pos_scores = [scores[(key, text_key("p:", p))][0] for p in line.pos_texts]
        ordered = ranked(found.get(key, []), line.query, set(line.pos_ids), set(positives))
        mined = choose_negatives(ordered, min(pos_scores), params, line.number)
        summary.in_range += mined.in_range
        summary.dropped_by_band += mined.dropped_by_band
        if not mined.negatives:
            summary.without_negatives.append(line.number)
            continue
        if len(mined.negatives) < params.negatives:
            summary.short_of_negatives += 1
        results.append((line, positives, mined))
    teacher_scores = (
        teacher.score_many(
            [(line.query, pos + [c.text for c in m.negatives]) for line, pos, m in results]
        )
        if teacher is not None
        else [None] * len(results)
    )
    out = []
    for (line, positives, mined), scored in zip(results, teacher_scores, strict=True):
        row = dict(line.row)
        row["pos"] = positives
        row["neg"] = [c.text for c in mined.negatives]
        if setup.instruction:
            row["prompt"] = setup.instruction
        if scored is not None:
            row["pos_scores"] = scored[: len(positives)]
            row["neg_scores"] = scored[len(positives) :]
        out.append((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    return out
