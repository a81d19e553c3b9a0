"""`embedq export-model`: a checkpoint to ONNX with its manifest (ops/export/ does the work)."""

from __future__ import annotations

from pathlib import Path

import click

from ops.cli.config import configure


@click.command("export-model")
@click.argument("source")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option(
    "--quantize",
    type=click.Choice(["none", "int8", "int8-openvino", "fp16"]),
    default="none",
    show_default=True,
    help="int8: ONNX Runtime CPU model behind a quality gate; int8-openvino: OpenVINO IR "
    "quantised with NNCF (behind the same gate; for a reranker, the rerankers' gate); fp16: GPU "
    "model.",
)
@click.option(
    "--pooling",
    type=click.Choice(["cls", "mean"]),
    default=None,
    help="Override the pooling read from the model's sentence-transformers config.",
)
@click.option("--normalize/--no-normalize", default=None, help="Override L2 normalisation.")
@click.option("--max-length", type=int, default=None, help="Override max tokens.")
@click.option("--query-instruction", default=None, help="Prefix for queries (not passages).")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--revision", default=None, help="Hub revision to export (hub ids only).")
@click.option(
    "--int8-min-mean-cos",
    type=float,
    default=0.99,
    show_default=True,
    help="Quality gate: mean cosine of INT8 vs FP32 on the held-out corpus.",
)
@click.option(
    "--int8-min-recall",
    type=float,
    default=0.90,
    show_default=True,
    help="Quality gate: nearest-neighbour recall@10 of INT8 vs FP32.",
)
@click.option(
    "--int8-min-pair-agreement",
    type=float,
    default=0.95,
    show_default=True,
    help="Quality gate (rerankers): share of passage pairs INT8 orders as FP32 does.",
)
@click.option(
    "--int8-max-score-error",
    type=float,
    default=0.02,
    show_default=True,
    help="Quality gate (rerankers): mean absolute error of the 0..1 relevance scores.",
)
@click.option("--force", is_flag=True, help="Keep an INT8 model that fails the quality gate.")
@click.option(
    "--source-id",
    default=None,
    help="Hub id a local SOURCE directory is a copy of, recorded in the manifest.",
)
def export_model_cmd(
    source: str,
    out_dir: Path,
    quantize: str,
    pooling: str | None,
    normalize: bool | None,
    max_length: int | None,
    query_instruction: str | None,
    opset: int,
    revision: str | None,
    int8_min_mean_cos: float,
    int8_min_recall: float,
    int8_min_pair_agreement: float,
    int8_max_score_error: float,
    force: bool,
    source_id: str | None,
) -> None:
    """Export SOURCE (hub id or local directory) to ONNX with its manifest."""
    settings = configure()
    from ops.export.model import ExportOptions, export_model
    from workers.engine import EngineConfig

    options = ExportOptions(
        pooling=pooling,  # type: ignore[arg-type]  # click.Choice guarantees the literal
        normalize=normalize,
        max_length=max_length,
        query_instruction=query_instruction,
        quantize=quantize,  # type: ignore[arg-type]
        opset=opset,
        revision=revision,
        source_id=source_id,
        int8_min_mean_cos=int8_min_mean_cos,
        int8_min_recall_at_10=int8_min_recall,
        int8_min_pair_agreement=int8_min_pair_agreement,
        int8_max_score_error=int8_max_score_error,
        force=force,
    )
    manifest = export_model(source, out_dir, options, EngineConfig.from_settings(settings))
    click.echo(f"exported {manifest.manifest_id} to {out_dir}")
    click.echo(manifest.model_dump_json(indent=2))
