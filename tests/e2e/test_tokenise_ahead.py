"""EMBEDQ_TOKENISE_AHEAD: a worker tokenises a batch on its consumer thread and the engine call
only runs the model (on the engine thread when claiming ahead), so tokenising the next batch
overlaps the engine; unset, that is so only where the engine runs on a GPU, and on this CPU the
engine call tokenises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from embedq_core.db import make_engine
from embedq_core.lifecycle.jobs import NewItem
from ops.devstack.stack import EmbeddedStack
from tests.support import job_in_new_collection, run_delivery_script

# One delivery in a fresh process, as a worker runs it, with the engine's calls recorded: which
# call, on which thread, for how many texts.
DELIVERY = """
import json, sys, threading
from embedq_core.settings import Settings
from workers.delivery.run import process_batch
from workers.context import WorkerContext

class Recording:
    def __init__(self, real):
        self._real = real
        self.manifest = real.manifest
        self.backend = real.backend
        self.calls = []
    def _record(self, call, count):
        self.calls.append([call, threading.current_thread().name, count])
    def embed(self, texts, input_type="passage", urgent=False, observed=True):
        self._record("embed", len(texts))
        return self._real.embed(texts, input_type, urgent, observed)
    def prepare(self, texts, input_type="passage", urgent=False, observed=True):
        self._record("prepare", len(texts))
        return self._real.prepare(texts, input_type, urgent, observed)
    def run(self, prepared, urgent=False, observed=True):
        self._record("run", len(prepared.texts))
        return self._real.run(prepared, urgent, observed)

tokenise_ahead = {"True": True, "False": False, "unset": None}[sys.argv[6]]
settings = Settings(
    database_url=sys.argv[1], redis_url=sys.argv[2], model_dir=sys.argv[3],
    claim_ahead=sys.argv[5] == "True", tokenise_ahead=tokenise_ahead,
)
ctx = WorkerContext.load(settings)
ctx.embedder = recording = Recording(ctx.embedder)
process_batch(ctx, sys.argv[4], 0)
ctx.mode.drain()
ctx.close()
print(json.dumps(recording.calls))
"""


# The session's worker serves this model: unpaused, its reconciler would send the hand-built job
# (never sent) to it 2 s after its creation, racing the delivery script.
@pytest.mark.usefixtures("reconciler_paused")
@pytest.mark.parametrize(
    ("claim_ahead", "tokenise_ahead"),
    [(False, "True"), (True, "True"), (True, "unset")],
    ids=["engine-on-consumer", "claim-ahead", "claim-ahead-cpu-default"],
)
def test_where_the_batch_is_tokenised(
    stack: EmbeddedStack, minilm_dir: Path, claim_ahead: bool, tokenise_ahead: str
) -> None:
    settings = stack.settings()
    database_url = settings.require_database_url()
    name = f"tokenise_{'ahead' if claim_ahead else 'consumer'}_{tokenise_ahead.lower()}"
    items = [NewItem(f"t{i}", f"第{i}条评论：物流很快，包装完好。", {}) for i in range(5)]
    job_id = job_in_new_collection(database_url, minilm_dir, name, items)
    result = run_delivery_script(
        DELIVERY, settings, minilm_dir, str(job_id), str(claim_ahead), tokenise_ahead
    )
    assert result.returncode == 0, result.stderr[-2000:]
    calls = json.loads(result.stdout.strip().splitlines()[-1])
    engine_thread = "embedq-engine_0" if claim_ahead else "MainThread"
    if tokenise_ahead == "True":
        # Tokenised once, ahead, on the consumer thread; the engine call does not embed() again.
        assert calls == [["prepare", "MainThread", 5], ["run", engine_thread, 5]]
    else:
        # The engine runs on this machine's CPU: its own call tokenises.
        assert calls == [["embed", engine_thread, 5]]
    engine = make_engine(database_url, pool_size=1)
    with engine.connect() as conn:
        done = conn.execute(
            text("SELECT count(*) FROM job_items WHERE job_id = :j AND status = 'done'"),
            {"j": job_id},
        ).scalar_one()
    engine.dispose()
    assert done == 5
