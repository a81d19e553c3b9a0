"""`embedq bench chunking`: long documents through the real API, a worker and Postgres, cut
by the worker (a chunking collection) against the same chunks' texts cut by the client and
submitted as items of an ordinary collection: documents/s, chunks/s and tokens/s of each.

Documents are the bench passages joined to lengths drawn uniformly (seeded) between the
bounds, mostly Chinese. The client's pieces are exactly the worker's chunks (cut with the
model's tokenizer here), so the comparison is the worker's chunking path (one tokenisation of
the whole document, chunk ids sent as they are, a document's rows replaced at once) against
tokenising and upserting each piece as a text."""

from __future__ import annotations

import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from embedq_core.catalog import Chunking
from embedq_core.manifest import ModelManifest
from embedq_core.settings import Settings
from ops.bench.engine import machine_description, machine_label, source_commit
from ops.bench.stack_setup import prepare_bench_database
from ops.data.corpus import load_bench_passages
from ops.devstack.processes import ChildProcess, start_api, start_worker
from ops.devstack.stack import EmbeddedStack
from workers.engine.tokenize import DocumentTokenizer

FINISHED = {"completed", "completed_with_errors", "failed"}


@dataclass
class ChunkingRow:
    """One way of getting the documents in."""

    variant: str
    documents: int
    chunks: int
    tokens: int
    seconds: float
    documents_per_s: float
    chunks_per_s: float
    tokens_per_s: float


def make_documents(count: int, min_chars: int, max_chars: int, seed: int = 7) -> list[str]:
    """count documents of min_chars..max_chars characters (uniform, seeded) of bench passages."""
    passages = [text for _, text in load_bench_passages(600)]
    rng = random.Random(seed)
    documents = []
    for _ in range(count):
        target = rng.randint(min_chars, max_chars)
        parts: list[str] = []
        length = 0
        while length < target:
            part = passages[rng.randrange(len(passages))]
            parts.append(part)
            length += len(part) + 2
        documents.append("\n\n".join(parts)[:target])
    return documents


def _submit_and_wait(
    client: httpx.Client, collection: str, items: list[dict[str, Any]], per_job: int,
    children: list[ChildProcess],
) -> tuple[float, list[dict[str, Any]]]:  # fmt: skip
    started = time.perf_counter()
    job_ids = []
    for start in range(0, len(items), per_job):
        response = client.post(
            f"/v1/collections/{collection}/jobs", json={"items": items[start : start + per_job]}
        )
        response.raise_for_status()
        job_ids.append(response.json()["job_id"])
    deadline = time.monotonic() + 6 * 3600
    while time.monotonic() < deadline:
        for child in children:
            if not child.alive():
                raise RuntimeError(f"{child.name} died:\n{child.log_tail()}")
        jobs = [client.get(f"/v1/jobs/{j}").json() for j in job_ids]
        if all(job["status"] in FINISHED for job in jobs):
            return time.perf_counter() - started, jobs
        time.sleep(0.2)
    raise TimeoutError(f"{collection}: jobs did not finish")


def run_chunking_bench(
    settings: Settings, model_dir: Path, documents: int, min_chars: int, max_chars: int,
    chunking: Chunking, out_json: Path, console: Console,
) -> list[ChunkingRow]:  # fmt: skip
    """Both variants on one worker, in one run."""
    texts = make_documents(documents, min_chars, max_chars)
    cutter = DocumentTokenizer(model_dir / "tokenizer.json")
    chunked = cutter.chunk(texts, chunking.max_tokens, chunking.overlap_tokens)
    pieces = [
        {"id": f"doc-{d}-{c.chunk_no}", "text": c.text}
        for d, chunks in enumerate(chunked)
        for c in chunks
    ]
    tokens = sum(len(c.tokens.ids) for chunks in chunked for c in chunks)
    rows: list[ChunkingRow] = []
    children: list[ChildProcess] = []
    with (
        tempfile.TemporaryDirectory() as data_dir,
        EmbeddedStack(settings, Path(data_dir)) as stack,
    ):
        logs = Path(data_dir) / "logs"
        database = prepare_bench_database(
            stack, model_dir, {"bench_documents": chunking, "bench_pieces": None}
        )
        run_settings, manifest, api_key = database.settings, database.manifest, database.api_key
        try:
            children.append(start_api(run_settings, logs))
            children.append(start_worker(run_settings, logs))
            client = httpx.Client(
                base_url=f"http://{run_settings.api_host}:{run_settings.api_port}",
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=120,
            )
            per_job = run_settings.max_items_per_job
            console.print(f"{documents} documents, cut by the worker …")
            items = [{"id": f"doc-{d}", "text": text} for d, text in enumerate(texts)]
            seconds, jobs = _submit_and_wait(client, "bench_documents", items, per_job, children)
            stored_chunks = sum(int(job["chunks"]) for job in jobs)
            if stored_chunks != len(pieces):
                raise RuntimeError(f"the worker stored {stored_chunks} chunks, not {len(pieces)}")
            rows.append(
                _row("cut by the worker (chunking collection)", texts, pieces, tokens, seconds)
            )
            console.print(f"the same {len(pieces)} chunks, cut by the client …")
            seconds, _ = _submit_and_wait(client, "bench_pieces", pieces, per_job, children)
            rows.append(
                _row(
                    "cut by the client (items of an ordinary collection)",
                    texts,
                    pieces,
                    tokens,
                    seconds,
                )
            )
        finally:
            for child in reversed(children):
                child.stop()
    _report(rows, manifest, chunking, min_chars, max_chars, out_json, console)
    return rows


def _row(
    variant: str, texts: list[str], pieces: list[dict[str, Any]], tokens: int, seconds: float
) -> ChunkingRow:
    return ChunkingRow(
        variant, len(texts), len(pieces), tokens, seconds,
        len(texts) / seconds, len(pieces) / seconds, tokens / seconds,
    )  # fmt: skip


def _report(
    rows: list[ChunkingRow], manifest: ModelManifest, chunking: Chunking, min_chars: int,
    max_chars: int, out_json: Path, console: Console,
) -> None:  # fmt: skip
    table = Table(
        title=f"long documents, {manifest.source}, chunks of {chunking.max_tokens} tokens "
        f"(overlap {chunking.overlap_tokens}), one worker, "
        f"{machine_label(machine_description())}"
    )
    columns = ("variant", "documents", "chunks", "seconds", "documents/s", "chunks/s", "tokens/s")
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    for r in rows:
        table.add_row(
            r.variant, str(r.documents), str(r.chunks), f"{r.seconds:.1f}",
            f"{r.documents_per_s:.2f}", f"{r.chunks_per_s:.1f}", f"{r.tokens_per_s:,.0f}",
        )  # fmt: skip
    console.print(table)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(
        json.dumps(
            {
                "commit": source_commit(),
                "machine": machine_description(),
                "model": manifest.source,
                "manifest_id": manifest.manifest_id,
                "chunking": asdict(chunking),
                "document_chars": [min_chars, max_chars],
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {out_json}")
