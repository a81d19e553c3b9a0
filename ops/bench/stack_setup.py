"""The database a bench run serves from: an embedded stack's schema, the model registered, an
API key and the run's collections."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedq_core.api_keys import create_key
from embedq_core.catalog import Chunking, create_collection, register_model_dir
from embedq_core.db import make_engine
from embedq_core.manifest import ModelManifest
from embedq_core.settings import Settings
from migrations.schema_upgrade import upgrade_head
from ops.devstack.stack import EmbeddedStack, free_port


@dataclass(frozen=True)
class BenchDatabase:
    """What the bench's API and workers start from."""

    settings: Settings  # the stack's, serving model_dir, the API on a free port
    manifest: ModelManifest
    api_key: str


def prepare_bench_database(
    stack: EmbeddedStack, model_dir: Path, collections: dict[str, Chunking | None]
) -> BenchDatabase:
    """Upgrade the stack's schema, register model_dir, make a key and the collections (name:
    chunking, None for an ordinary one) bound to the model."""
    settings = stack.settings().model_copy(update={"model_dir": model_dir, "api_port": free_port()})
    upgrade_head(settings.require_database_url())
    engine = make_engine(settings.require_database_url(), pool_size=1)
    try:
        with engine.begin() as conn:
            manifest = register_model_dir(conn, model_dir)
            _, api_key = create_key(conn, "bench")
        for name, chunking in collections.items():
            create_collection(engine, name, manifest.manifest_id, chunking)
    finally:
        engine.dispose()
    return BenchDatabase(settings, manifest, api_key)
