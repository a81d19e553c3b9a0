"""The embedq command line: the processes, the demo, model export and operator tasks."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import click

from ops.bench.cli import bench
from ops.cli.catalog import collections, keys
from ops.cli.config import configure
from ops.cli.export_model import export_model_cmd
from ops.cli.mine import mine_cmd
from ops.cli.reembed import reembed
from ops.cli.vectorize import vectorize


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)


@click.group()
def main() -> None:
    """embedq: asynchronous batch embedding into Postgres/pgvector."""
    # In a container our process is PID 1, which ignores a signal that has no handler: until
    # uvicorn or Celery install theirs, `docker stop` during a start-up wait or a model load
    # would wait out the whole grace period and end in SIGKILL.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


@main.command()
@click.option("--keep-running", is_flag=True, help="Leave the stack up and print its URLs.")
def demo(keep_running: bool) -> None:
    """Run the whole pipeline on the embedded stack and the bundled model, then query it."""
    from ops.devstack.demo import run_demo

    run_demo(configure(quiet=True), keep_running=keep_running)


@main.command()
def settings() -> None:
    """Print the settings reference (every variable, its default, unit and meaning) as
    Markdown: the page docs/reference/settings.md holds."""
    from ops.docsgen.settings_page import render_markdown

    click.echo(render_markdown(), nl=False)


@main.group()
def docs() -> None:
    """The docs site's generated pages (settings, CLI, metrics, benchmarks)."""


@docs.command("generate")
@click.option("--check", is_flag=True, help="Only report stale pages; exit 1 if any.")
def docs_generate(check: bool) -> None:
    """Render the reference pages from the code and the benchmarks page from the results JSON."""
    from ops.docsgen.pages import stale_pages, write_pages

    if check:
        stale = stale_pages()
        for page in stale:
            click.echo(f"stale: {page}")
        raise SystemExit(1 if stale else 0)
    for page in write_pages():
        click.echo(f"wrote {page}")


@main.command()
def api() -> None:
    """Run the HTTP API (uvicorn)."""
    settings = configure()
    import uvicorn

    from api.main import create_app
    from embedq_core.startup_wait import wait_for_broker, wait_for_database
    from migrations.schema_upgrade import head_revision

    wait_for_database(settings, schema_head=head_revision())
    wait_for_broker(settings)

    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
    )


@main.command()
def worker() -> None:
    """Run one embedding worker for the model in EMBEDQ_MODEL_DIR."""
    from workers.main import run_worker

    run_worker(configure())


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the Alembic migrations (run before starting API and workers); with
    EMBEDQ_APP_DB_ROLE set, also create or update that login role for the API and workers."""
    settings = configure()
    from embedq_core.startup_wait import wait_for_database
    from migrations.schema_upgrade import upgrade_head

    wait_for_database(settings)
    upgrade_head(settings.require_database_url())
    click.echo("schema is at head")
    if settings.app_db_role is None:
        return
    if settings.app_db_password is None:
        raise click.UsageError("EMBEDQ_APP_DB_ROLE is set: set EMBEDQ_APP_DB_PASSWORD too")
    from migrations.app_role import ensure_app_role

    ensure_app_role(
        settings.require_database_url(),
        settings.app_db_role,
        settings.app_db_password.get_secret_value(),
    )
    click.echo(f"role {settings.app_db_role} may use the schema (login; no superuser, no DDL)")


@main.command("eval")
@click.option(
    "--data",
    "data_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help='Labelled JSONL, one {"query", "pos": [...], "neg": [...]} per line '
    "(default: the shipped ops/data/eval_zh.jsonl).",
)
@click.option(
    "--model",
    "model_dirs",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    multiple=True,
    required=True,
    help="Exported model directory (ONNX + tokenizer.json + manifest); repeat to compare.",
)
@click.option("--json", "out_json", type=click.Path(path_type=Path), default=None)
@click.option(
    "--plot",
    "out_plot",
    type=click.Path(path_type=Path),
    default=None,
    help="PNG of positive/negative cosine distributions per model (needs the eval extra).",
)
@click.option(
    "--mode",
    "modes",
    type=click.Choice(["dense", "sparse", "hybrid"]),
    multiple=True,
    default=("dense",),
    show_default=True,
    help="Ranking to score; repeat to compare on the same embeddings. sparse (lexical weights) "
    "and hybrid (reciprocal-rank fusion) need a model with a sparse head (BGE-M3).",
)
@click.option(
    "--rerank",
    "reranker_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Exported reranker directory: adds, after each model and mode, the same ranking "
    "re-ordered by the reranker.",
)
@click.option(
    "--candidates",
    type=click.IntRange(min=10),
    default=20,
    show_default=True,
    help="With --rerank: passages of the global pool the reranker re-orders per query.",
)
def eval_cmd(
    data_file: Path | None,
    model_dirs: tuple[Path, ...],
    out_json: Path | None,
    out_plot: Path | None,
    modes: tuple[str, ...],
    reranker_dir: Path | None,
    candidates: int,
) -> None:
    """Compare exported models on labelled query/passage pairs: recall@k and MRR on the test
    pool (each query's own pos + neg) and the global pool (every passage of the file), in
    dense, sparse or hybrid mode."""
    settings = configure(quiet=True)
    from rich.console import Console

    from embedq_core.manifest import ModelManifest
    from ops.evaluation.dataset import DatasetError, load_eval_set
    from ops.evaluation.modes import MODES
    from ops.evaluation.report import (
        MissingExtraError,
        build_table,
        notes,
        require_matplotlib,
        write_json,
        write_plot,
    )
    from ops.evaluation.run import run_models
    from workers.engine import EngineConfig

    try:
        if out_plot is not None:
            require_matplotlib()
        eval_set = load_eval_set(data_file)
        if reranker_dir is not None and not ModelManifest.read(reranker_dir).is_reranker:
            raise ValueError(f"{reranker_dir}: --rerank needs a reranker export")
        for model_dir in model_dirs:
            # A missing manifest, or a mode the model cannot rank in, fails before embedding.
            if ModelManifest.read(model_dir).is_reranker:
                raise ValueError(f"{model_dir} is a reranker: pass it with --rerank")
            sparse = ModelManifest.read(model_dir).sparse
            if set(modes) - {"dense"} and not sparse:
                raise ValueError(
                    f"{model_dir}: --mode sparse and hybrid need a model with a sparse head "
                    "(BGE-M3); this one is dense-only"
                )
    except (MissingExtraError, DatasetError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    console = Console()
    # Progress on stderr: stdout carries only the table, so it can be piped or redirected.
    runs = run_models(
        eval_set,
        model_dirs,
        EngineConfig.from_settings(settings),
        Console(stderr=True),
        [mode for mode in MODES if mode in modes],
        reranker_dir,
        candidates,
    )
    console.print(build_table(eval_set, runs))
    for line in notes(eval_set, runs):
        console.print(line, highlight=False)
    if out_json is not None:
        write_json(out_json, eval_set, runs)
        console.print(f"wrote {out_json}")
    if out_plot is not None:
        write_plot(out_plot, runs)
        console.print(f"wrote {out_plot}")


main.add_command(export_model_cmd)
main.add_command(collections)
main.add_command(keys)
main.add_command(reembed)
main.add_command(vectorize)
main.add_command(bench)
main.add_command(mine_cmd)

if __name__ == "__main__":
    main()
