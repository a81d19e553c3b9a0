"""Shared fixtures: a real embedded Postgres + pgvector and Valkey, the bundled MiniLM exported
once per session, and real API and Celery worker processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embedq_core.api_keys import create_key
from embedq_core.catalog import Chunking, create_collection, register_model_dir
from embedq_core.db import libpq_url, make_engine
from embedq_core.manifest import ModelManifest
from embedq_core.settings import Settings
from migrations.schema_upgrade import upgrade_head
from ops.data.corpus import load_demo_corpus
from ops.devstack.bundled_model import ensure_bundled_model
from ops.devstack.processes import ChildProcess, start_api, start_worker
from ops.devstack.stack import EmbeddedStack, free_port
from ops.export.model import ExportOptions, export_model
from tests.docs_examples import all_examples
from tests.exact_words import exact_word_texts
from tests.m3_model import build_tiny_m3
from tests.model_factory import BGE_INSTRUCTION, EXTRA_CHARACTERS, build_tiny_bge
from tests.support import PrivatePipeline, ServiceHandle, engine_config, make_manifest_variant
from workers.background.reconciler import RECONCILER_LOCK_ID

TIERS = ("unit", "db", "model", "e2e", "deployment")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, the folder it lives in (tests/<tier>/...)."""
    tests_dir = Path(__file__).parent
    for item in items:
        tier = item.path.relative_to(tests_dir).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in one of tests/{TIERS}")
        item.add_marker(getattr(pytest.mark, tier))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many of the docs' code blocks this run executed, and which are marked skipped."""
    example_tests = ("test_docs_examples.py::test_sql_example_runs", "test_shell_and_python")
    outcomes = {"passed": 0, "failed": 0}
    for outcome in outcomes:
        for report in terminalreporter.stats.get(outcome, []):
            if report.when == "call" and any(name in report.nodeid for name in example_tests):
                outcomes[outcome] += 1
    if not any(outcomes.values()):
        return
    blocks = all_examples()
    skipped = {ex.key: ex for ex in blocks if ex.skip_reason}
    terminalreporter.section("docs examples")
    terminalreporter.write_line(
        f"{len(blocks)} code blocks on the README and docs pages; distinct blocks run here: "
        f"{outcomes['passed']} passed, {outcomes['failed']} failed (plus the quickstart's demo "
        f"command, run by tests/e2e/test_demo.py); marked skipped: {len(skipped)}"
    )
    for ex in skipped.values():
        terminalreporter.write_line(f"  skipped {ex.where}: {ex.skip_reason}")


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled all-MiniLM-L6-v2 exported to ONNX by our own exporter."""
    model_dir = tmp_path_factory.mktemp("models") / "minilm"
    ensure_bundled_model(model_dir, engine_config())
    return model_dir


@pytest.fixture(scope="session")
def minilm_manifest(minilm_dir: Path) -> ModelManifest:
    """The manifest written by the export."""
    return ModelManifest.read(minilm_dir)


@pytest.fixture(scope="session")
def tiny_bge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BGE-shaped model (random weights, 1024-d, CLS, Chinese character vocab) exported to
    ONNX by our exporter; its source directory is the manifest's source."""
    texts = [text for _, text in load_demo_corpus()]
    source = build_tiny_bge(
        tmp_path_factory.mktemp("src") / "tiny-bge",
        [*texts, BGE_INSTRUCTION, EXTRA_CHARACTERS],
    )
    out = tmp_path_factory.mktemp("onnx") / "tiny-bge"
    export_model(
        str(source), out, ExportOptions(query_instruction=BGE_INSTRUCTION), engine_config()
    )
    return out


@pytest.fixture(scope="session")
def tiny_m3_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BGE-M3-shaped checkpoint (XLM-R, 8,192 tokens, random weights and sparse head) whose
    vocabulary covers the exact-words labelled set and the demo corpus."""
    texts = [*exact_word_texts(), *(text for _, text in load_demo_corpus())]
    return build_tiny_m3(tmp_path_factory.mktemp("src") / "tiny-m3", texts)


@pytest.fixture(scope="session")
def tiny_m3_dir(tiny_m3_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BGE-M3 exported by our exporter: one graph, dense + sparse outputs."""
    out = tmp_path_factory.mktemp("onnx") / "tiny-m3"
    export_model(str(tiny_m3_source), out, ExportOptions(), engine_config())
    return out


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """Embedded Postgres and Valkey for the whole session (or the URLs in the environment)."""
    data_dir = tmp_path_factory.mktemp("stack")
    with EmbeddedStack(Settings(), data_dir) as running:
        upgrade_head(running.settings().require_database_url())
        yield running


@pytest.fixture(scope="session")
def services(
    stack: EmbeddedStack,
    minilm_dir: Path,
    minilm_manifest: ModelManifest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceHandle]:
    """The API and one worker as real processes, with a collection bound to MiniLM."""
    settings = stack.settings().model_copy(
        update={
            "model_dir": minilm_dir,
            "api_port": free_port(),
            "items_per_task": 16,
            "reconcile_interval_s": 1.0,
            "requeue_grace_s": 2.0,
        }
    )
    engine = make_engine(settings.require_database_url(), pool_size=2)
    with engine.begin() as conn:
        register_model_dir(conn, minilm_dir)
        _, api_key = create_key(conn, "tests")
    create_collection(engine, "docs", minilm_manifest.manifest_id)
    log_dir = tmp_path_factory.mktemp("logs")
    children: list[ChildProcess] = []
    try:
        children.append(start_api(settings, log_dir))
        children.append(start_worker(settings, log_dir))
        yield ServiceHandle(settings, engine, children, log_dir, api_key)
    finally:
        for child in reversed(children):
            child.stop()
        engine.dispose()


@pytest.fixture
def reconciler_paused(stack: EmbeddedStack) -> Iterator[None]:
    """Hold the fleet's reconciler lock: running workers neither send nor re-send the
    hand-built jobs a test inspects meanwhile (their reconciler skips its passes)."""
    url = libpq_url(stack.settings().require_database_url())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (RECONCILER_LOCK_ID,))
        yield


@pytest.fixture
def private_pipeline(
    services: ServiceHandle, minilm_dir: Path, tmp_path: Path
) -> Iterator[Callable[..., PrivatePipeline]]:
    """An API and a collection on a model variant of their own (own queue), with workers the
    test starts and kills itself; the session's worker never sees these batches."""
    pipelines: list[PrivatePipeline] = []

    def make(
        name: str, chunking: Chunking | None = None, **settings_changes: object
    ) -> PrivatePipeline:
        model_dir = tmp_path / f"model-{name}"
        # The collection name in the revision gives this pipeline a model id, so queues, of its
        # own: no message another test left behind reaches its workers.
        make_manifest_variant(minilm_dir, model_dir, max_length=255, source_revision=f"test-{name}")
        with services.engine.begin() as conn:
            manifest = register_model_dir(conn, model_dir)
        create_collection(services.engine, name, manifest.manifest_id, chunking)
        settings = services.settings.model_copy(
            update={"api_port": free_port(), "model_dir": model_dir, **settings_changes}
        )
        api = start_api(settings, tmp_path / name)
        handle = ServiceHandle(settings, services.engine, [api], tmp_path / name, services.api_key)
        pipeline = PrivatePipeline(handle, name)
        pipelines.append(pipeline)
        return pipeline

    yield make
    for pipeline in pipelines:
        for child in reversed(pipeline.handle.children):
            child.stop()
