"""A worker whose engine fails on everything gives the attempt back and exits (the batch goes to
a healthy worker); a batch that fails on its own texts is counted as usual."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from embedq_core.db import make_engine
from embedq_core.lifecycle.jobs import NewItem
from ops.devstack.stack import EmbeddedStack
from tests.support import job_in_new_collection, run_delivery_script
from workers.delivery.embed import EXIT_CODE

# Runs one delivery in a fresh process, as a worker would, with an engine that fails on
# everything ("all") or only on the batch's texts ("batch").
DELIVERY = """
import sys
from embedq_core.settings import Settings
from workers.delivery.run import process_batch
from workers.context import WorkerContext

class Failing:
    def __init__(self, real, mode):
        self._real, self._mode = real, mode
        self.manifest = real.manifest
        self.backend = real.backend
    def _fail(self, texts):
        if self._mode == "all" or any(t.startswith("poison") for t in texts):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
    def embed(self, texts, input_type="passage", urgent=False, observed=True):
        self._fail(texts)
        return self._real.embed(texts, input_type, urgent, observed)
    def prepare(self, texts, input_type="passage", urgent=False, observed=True):
        return self._real.prepare(texts, input_type, urgent, observed)  # tokenising works
    def run(self, prepared, urgent=False, observed=True):
        self._fail(prepared.texts)
        return self._real.run(prepared, urgent, observed)

settings = Settings(
    database_url=sys.argv[1], redis_url=sys.argv[2], model_dir=sys.argv[3],
    claim_ahead=sys.argv[6] == "True", max_engine_refunds=int(sys.argv[7]),
)
ctx = WorkerContext.load(settings)
ctx.embedder = Failing(ctx.embedder, sys.argv[4])
try:
    outcome = process_batch(ctx, sys.argv[5], 0)
    ctx.mode.drain()  # claiming ahead, the engine thread embeds (and fails) after the return
    print("handed over:", outcome.written_behind)
except RuntimeError as exc:
    print("delivery failed:", exc)
"""


def _attempts(engine_url: str, job_id: str) -> list[tuple[int, str | None]]:
    engine = make_engine(engine_url, pool_size=1)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT attempts, error FROM job_items WHERE job_id = :j ORDER BY item_index"),
            {"j": job_id},
        ).all()
    engine.dispose()
    return [(r[0], r[1]) for r in rows]


# The session's worker serves this model: unpaused, its reconciler would send the hand-built job
# (never sent) to it 2 s after its creation, racing the delivery script.
@pytest.mark.usefixtures("reconciler_paused")
@pytest.mark.parametrize("claim_ahead", [False, True], ids=["engine-on-consumer", "claim-ahead"])
@pytest.mark.parametrize("mode", ["all", "batch"])
def test_a_broken_engine_leaves_without_spending_the_attempt(
    stack: EmbeddedStack, minilm_dir: Path, mode: str, claim_ahead: bool
) -> None:
    settings = stack.settings()
    database_url = settings.require_database_url()
    name = f"health_{mode}_{'ahead' if claim_ahead else 'consumer'}"
    items = [NewItem(f"p{i}", f"poison text {i}", {}) for i in range(3)]
    job_id = job_in_new_collection(database_url, minilm_dir, name, items)
    result = run_delivery_script(
        DELIVERY, settings, minilm_dir, mode, str(job_id), str(claim_ahead), "3"
    )
    attempts = _attempts(database_url, str(job_id))
    if mode == "all":
        assert result.returncode == EXIT_CODE, result.stderr[-2000:]
        assert attempts == [(0, None)] * 3  # claimed, then given back: no error recorded
    else:
        # With the engine on the consumer thread the delivery raises; claiming ahead it returns
        # once the batch is claimed, and the engine thread records the failure (and logs it).
        said = "handed over: True" if claim_ahead else "delivery failed"
        assert result.returncode == 0 and said in result.stdout, result.stderr[-2000:]
        if claim_ahead:
            assert "embedding a batch behind the consumer failed" in result.stderr
        assert [a for a, _ in attempts] == [1, 1, 1]
        assert all(error and "CUDA error" in error for _, error in attempts)


@pytest.mark.usefixtures("reconciler_paused")
def test_attempts_are_given_back_a_bounded_number_of_times(
    stack: EmbeddedStack, minilm_dir: Path
) -> None:
    """A text that breaks every engine it meets (the probe fails after it each time) would be
    retried forever if its attempt always came back: past max_engine_refunds the failure
    counts, with the reason, and the attempt counter ends the retries."""
    settings = stack.settings()
    database_url = settings.require_database_url()
    items = [NewItem(f"p{i}", f"poison text {i}", {}) for i in range(3)]
    job_id = job_in_new_collection(database_url, minilm_dir, "health_bounded", items)
    for expected in ([(0, None)] * 3, [(1, "given back 1 times already")] * 3):
        result = run_delivery_script(
            DELIVERY, settings, minilm_dir, "all", str(job_id), "False", "1"
        )
        assert result.returncode == EXIT_CODE, result.stderr[-2000:]
        attempts = _attempts(database_url, str(job_id))
        assert [a for a, _ in attempts] == [a for a, _ in expected]
        for (_, error), (_, said) in zip(attempts, expected, strict=True):
            assert error == said if said is None else (error is not None and said in error)
    engine = make_engine(database_url, pool_size=1)
    with engine.connect() as conn:
        refunds = conn.execute(
            text("SELECT engine_refunds FROM job_batches WHERE job_id = :j"), {"j": job_id}
        ).scalar_one()
    engine.dispose()
    assert refunds == 1
