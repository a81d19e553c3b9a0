"""Settings of a worker's engine: which model it serves and how it runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class EngineSettings(BaseModel):
    """Worker: the model and how the engine runs it"""

    # Worker: which exported model (directory holding embedq_manifest.json) it serves.
    model_dir: Path | None = Field(default=None, description="exported model a worker serves")
    runtime: Literal["auto", "onnxruntime-cpu", "onnxruntime-cuda", "openvino"] = Field(
        default="auto",
        description=(
            "`auto` (CUDA when present, else the fastest CPU runtime for the model), "
            "`onnxruntime-cpu`, `onnxruntime-cuda`, `openvino`"
        ),
    )
    intra_op_threads: int = Field(
        default=0, ge=0, description="runtime threads (0: runtime decides)"
    )
    # OpenVINO only: that many batches run at once, each on its share of the threads. Batches
    # stop waiting on each other's threads (a CPU shared with Postgres or the API stalls one
    # stream, not all), but a lone batch (a live query) gets only its share: slower alone.
    engine_streams: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "OpenVINO only (ONNX Runtime refuses anything else at start): batches run at once, "
            "each on its share of the threads. More than 1 keeps a core taken by Postgres or the "
            "API from stalling every engine thread, but a lone text (a one-text live query) runs "
            "on its share only (1.7× as long on 2 cores with 2 streams). For bulk-only workers on "
            "small shared machines"
        ),
    )
    max_batch_tokens: int = Field(
        default=1024,
        ge=16,
        description=(
            "padded-token budget of one inference batch; with preemption off, also bounds how "
            "long a live query can wait behind bulk work (one batch per stream)"
        ),
    )
    max_batch_size: int = Field(default=32, ge=1, description="most texts in one inference batch")
    # A query that finds a bulk batch running cancels it (both runtimes stop between two graph
    # nodes), runs at once, and the bulk batch runs again in halves; a batch cancelled this many
    # times runs to its end, so bulk work always progresses however many queries come, at a
    # cost of less than twice its engine time in the worst case.
    max_preemptions_per_batch: int = Field(
        default=4,
        ge=0,
        le=16,
        description=(
            "how many times a live query may cancel a bulk engine batch in flight rather than "
            "wait for it; each time the batch runs again cut in halves, and after this many it "
            "runs to its end (`0`: a query waits for the bulk batch in flight)"
        ),
    )
    # Write a batch's vectors on a second thread while the next batch is claimed and embedded
    # (its lock is held until the write commits; the message is acknowledged before that, and a
    # worker that dies meanwhile leaves a claimed, pending batch that the reconciler re-sends).
    write_behind: bool = Field(
        default=True,
        description=(
            "write a batch's vectors on a second thread while the next batch is claimed and "
            "embedded (`false`: one after the other)"
        ),
    )
    # With write_behind on, the engine also runs on its own thread: the consumer thread claims
    # the next batch (and acknowledges its message) while the engine embeds this one and the
    # writer writes the last, so the claim's round trips and Celery's acknowledge and fetch no
    # longer leave the engine idle. A third lane holds the batch claimed ahead; its lock is
    # held until its write commits, as for write_behind.
    claim_ahead: bool = Field(
        default=True,
        description=(
            "with write-behind on, the engine runs on a thread of its own: the consumer claims the"
            " next batch (and acknowledges its message) while the engine embeds this one and the "
            "writer writes the last, on three lanes (database sessions). `false`: the consumer "
            "claims the next batch once the engine is done with this one. Off with "
            "`EMBEDQ_WRITE_BEHIND=false`"
        ),
    )
    # Tokenise a batch on the consumer thread, so the engine call only runs the model (with
    # claim_ahead: while the engine runs the last batch). Unset: on where the engine runs on a
    # GPU, which would otherwise wait for the CPU's tokenising; off where it runs on the CPU,
    # whose cores the engine's threads already fill (on 2 cores tokenising ahead read a median
    # 0.85 of the bare engine against 0.88 in line, 7 A/B runs each: README "Figures").
    tokenise_ahead: bool | None = Field(
        default=None,
        description=(
            "`true`: the consumer tokenises a batch (and pads its engine batches) before handing "
            "it to the engine, so the engine call only runs the model, and with claim-ahead the "
            "next batch's tokenising overlaps the engine. Unset: on where the engine runs on a "
            "GPU, off on a CPU, whose cores the engine's threads already fill"
        ),
    )
    # A delivery whose batch has fewer pending items than this also claims other small batches
    # of the same model that wait in the queue, until the group holds items_per_task items or
    # tokens_per_task estimated tokens (the last batch taken may pass the token budget: its
    # texts are known once claimed), and embeds them all in one engine call (a burst of small
    # jobs: an engine call of a few texts pads and runs at about half the speed of a full one).
    # Each batch is still written and finished on its own. 0 turns it off.
    coalesce_below_items: int = Field(
        default=64,
        ge=0,
        description=(
            "a delivery whose batch has fewer pending items also claims other small batches of its"
            " model waiting in the queue, up to a task's items and tokens, and embeds them in one "
            "engine call; each is still written and finished on its own (`0`: off)"
        ),
    )
