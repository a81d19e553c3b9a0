"""`embedq vectorize ...`: bind a table so its vector column follows its text for good."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from embedq_core.manifest import ModelManifest
from embedq_core.settings import Settings
from ops.cli.chunking_options import chunking_from_options, chunking_options
from ops.cli.config import configure
from ops.cli.reembed import (
    NAMES_HELP,
    fail,
    lock_policy,
    print_status,
    run_control,
    table_connection,
)

TEMPLATE_HELP = (
    "A template names columns in braces, as in SQL: --template '{title}\\n{lyrics}' or "
    """'{"Title"}: {body}'; \\n and \\t are a newline and a tab, {{ and }} literal braces."""
)


@click.group()
def vectorize() -> None:
    """Keep a table's vector column embedded from its text, for good (a table vectorizer)."""


@vectorize.command("add", epilog=f"{NAMES_HELP} {TEMPLATE_HELP}")
@click.argument("name")
@click.option("--table", required=True, help="table or schema.table, as in SQL")
@click.option("--id", "id_column", required=True, help="single-column primary key")
@click.option("--text", "text_column", default=None, help="the text column to embed")
@click.option("--template", default=None, help="or a template over several columns")
@click.option("--vector", "vector_column", required=True, help="vector column (created if missing)")
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(path_type=Path, exists=True),
    help="exported model dir",
)
@click.option("--chunk-size", type=int, default=None, help="rows per step")
@chunking_options("each row's text (kept in <table>_<vector>_chunks)")
def add_cmd(
    name: str,
    table: str,
    id_column: str,
    text_column: str | None,
    template: str | None,
    vector_column: str,
    model_dir: Path,
    chunk_size: int | None,
    chunk_max_tokens: int | None,
    chunk_overlap_tokens: int,
) -> None:
    """Bind TABLE as vectorizer NAME: backfill its rows, then embed every insert and every
    change of the text, for good."""
    from embedq_core.queueing import make_celery
    from migrations.reembed.control import MigrationStateError, start
    from migrations.reembed.locking import LockTimeout
    from migrations.reembed.target import TargetError
    from migrations.reembed.text_source import TemplateError
    from migrations.reembed.vectorizer import draft_vectorizer

    chunking = chunking_from_options(chunk_max_tokens, chunk_overlap_tokens)
    settings = configure(quiet=True)
    manifest = _register(settings, model_dir)
    with table_connection(settings) as conn:
        try:
            draft = draft_vectorizer(
                conn,
                name,
                table,
                id_column,
                text_column,
                template,
                vector_column,
                manifest,
                chunk_size or settings.reembed_chunk_size,
                chunking,
            )
            m = start(conn, draft, make_celery(settings), lock_policy(settings))
        except (TargetError, TemplateError, MigrationStateError, LockTimeout) as exc:
            raise fail(exc) from exc
        shown = m.display_name(conn)
        where = f"{shown}.{m.new_column}"
        if m.chunk_table is not None and m.chunking is not None:
            where = (
                f"{m.chunk_table.as_string(conn)}.{m.new_column} (windows of"
                f" {m.chunking.max_tokens} tokens overlapping by {m.chunking.overlap_tokens})"
            )
    weights = "" if m.columns.sparse is None else f" (lexical weights in {m.columns.sparse})"
    click.echo(
        f"vectorizer {m.name}: {where}{weights} follows "
        f"{m.template_written or m.text_column} with {m.manifest_id}; {m.rows_total:,} rows"
    )
    click.echo(f"backfilling now; follow it with: embedq vectorize status {m.name}")


def _register(settings: Settings, model_dir: Path) -> ModelManifest:
    """The export's manifest, recorded in the catalog as a worker would."""
    from embedq_core.catalog import register_model_dir
    from embedq_core.db import make_engine

    engine = make_engine(settings.require_database_url(), pool_size=1)
    with engine.begin() as sa_conn:
        manifest = register_model_dir(sa_conn, model_dir)
    engine.dispose()
    return manifest


@vectorize.command("change-model")
@click.argument("name")
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(path_type=Path, exists=True),
    help="the new model's export dir",
)
@click.option("--new-column", default=None, help="the new vectors' column until cutover")
@click.option("--migration", "migration_name", default=None, help="the migration's name")
@click.option("--chunk-size", type=int, default=None, help="rows per step")
def change_model_cmd(
    name: str,
    model_dir: Path,
    new_column: str | None,
    migration_name: str | None,
    chunk_size: int | None,
) -> None:
    """Move vectorizer NAME to another model through a re-embedding migration: the new column
    (default <vector>_next) is backfilled and follows the text while NAME keeps its column
    fresh; then `embedq reembed verify|cutover|rollback|finalize`, after which NAME follows
    with the new model. The migration is named <NAME>_change<N> unless --migration."""
    from embedq_core.queueing import make_celery
    from migrations.reembed.control import MigrationStateError, start
    from migrations.reembed.locking import LockTimeout
    from migrations.reembed.model_change import (
        ModelChangeError,
        default_name,
        draft_model_change,
    )
    from migrations.reembed.state import MigrationNotFound, load
    from migrations.reembed.target import TargetError

    settings = configure(quiet=True)
    manifest = _register(settings, model_dir)
    with table_connection(settings) as conn:
        try:
            v = load(conn, name)
            draft = draft_model_change(
                conn,
                v,
                migration_name or default_name(conn, name),
                new_column or f"{v.new_column}_next",
                manifest,
                chunk_size or settings.reembed_chunk_size,
            )
            m = start(conn, draft, make_celery(settings), lock_policy(settings))
        except (
            MigrationNotFound,
            ModelChangeError,
            TargetError,
            MigrationStateError,
            LockTimeout,
        ) as exc:
            raise fail(exc) from exc
        shown = m.display_name(conn)
    click.echo(
        f"model change {m.name}: {shown}.{m.new_column} fills with {m.manifest_id}"
        f" ({v.dimension}-d -> {m.dimension}-d); {name} keeps {v.new_column} fresh with"
        f" {v.manifest_id} until finalize"
    )
    click.echo(
        f"next: embedq reembed status {m.name} --watch; embedq reembed verify {m.name}"
        f" --model DIR; embedq reembed cutover {m.name} (rollback {m.name} to go back);"
        f" embedq reembed finalize {m.name}"
    )


@vectorize.command("abandon-change")
@click.argument("migration")
def abandon_change_cmd(migration: str) -> None:
    """Give up a model change that is not cut over: its column and trigger are dropped; the
    vectorizer goes on with its model."""
    from migrations.reembed.control import abandon_model_change
    from migrations.reembed.locking import LockTimeout
    from migrations.reembed.model_change import ModelChangeError
    from migrations.reembed.state import MigrationNotFound

    settings = configure(quiet=True)
    with table_connection(settings) as conn:
        try:
            abandon_model_change(conn, migration, lock_policy(settings))
        except (ModelChangeError, MigrationNotFound, LockTimeout) as exc:
            raise fail(exc) from exc
    click.echo(f"{migration}: abandoned; its column and trigger are dropped")


@vectorize.command("list")
def list_cmd() -> None:
    """Every vectorizer: table, status, phase, pending rows and lag."""
    from migrations.reembed.progress import list_migrations, progress

    settings = configure(quiet=True)
    table = Table("vectorizer", "table", "status", "phase", "pending", "lag s", "parked")
    with table_connection(settings) as conn:
        for name in list_migrations(conn, kind="vectorizer"):
            f = progress(conn, name)
            lag = "—" if f.lag_s is None else f"{f.lag_s:,.1f}"
            table.add_row(
                name, escape(f.table), f.status, f.phase, f"{f.rows_pending:,}", lag,
                str(f.rows_parked),
            )  # fmt: skip
    Console().print(table)


@vectorize.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def status_cmd(name: str, as_json: bool) -> None:
    """Rows, pending, lag, rate, phase, and the rows the table refused."""
    from migrations.reembed import model_change, row_failures
    from migrations.reembed.progress import progress
    from migrations.reembed.state import MigrationNotFound, load

    settings = configure(quiet=True)
    with table_connection(settings) as conn:
        try:
            figures = progress(conn, name)
        except MigrationNotFound as exc:
            raise fail(exc) from exc
        failures = row_failures.latest(conn, name)
        change = model_change.in_flight(conn, name)
        change_state = None if change is None else load(conn, change)
    if as_json:
        out = figures.as_dict()
        out["model_change"] = change
        out["failures"] = [
            {
                "row": f.row_key,
                "attempts": f.attempts,
                "parked": f.parked,
                "error": f.error,
                "retry_at": f.retry_at.isoformat(),
            }
            for f in failures
        ]
        click.echo(json.dumps(out, default=str))
        return
    console = Console()
    print_status(console, figures)
    if change_state is not None:
        stage = "cut over" if change_state.cut_over else change_state.phase
        console.print(
            f"model change in progress: {change} to {change_state.manifest_id} ({stage});"
            f" embedq reembed status {change}"
        )
    if failures:
        table = Table("row", "attempts", "state", "error", title="rows the table refused")
        for f in failures:
            state = "parked" if f.parked else f"retry at {f.retry_at:%H:%M:%S}"
            table.add_row(escape(json.dumps(f.row_key)), str(f.attempts), state, escape(f.error))
        console.print(table)


@vectorize.command("pause")
@click.argument("name")
def pause_cmd(name: str) -> None:
    """Stop after the current chunk; writes keep queueing rows meanwhile."""
    run_control("pause", name)


@vectorize.command("resume")
@click.argument("name")
@click.option("--retry-parked", is_flag=True, help="Also give parked rows a fresh budget.")
def resume_cmd(name: str, retry_parked: bool) -> None:
    """Continue (also after a failure); rows waiting meanwhile are embedded first."""
    run_control("resume", name, retry_parked=retry_parked)


@vectorize.command("drop")
@click.argument("name")
@click.option(
    "--drop-columns",
    is_flag=True,
    help="Also drop the vector, manifest and queued columns (the vectors are lost).",
)
def drop_cmd(name: str, drop_columns: bool) -> None:
    """Remove the vectorizer's trigger and indexes; its vectors stay unless --drop-columns."""
    from migrations.reembed.control import MigrationStateError
    from migrations.reembed.locking import LockTimeout
    from migrations.reembed.state import MigrationNotFound
    from migrations.reembed.vectorizer import drop

    settings = configure(quiet=True)
    with table_connection(settings) as conn:
        try:
            m = drop(conn, name, lock_policy(settings), drop_columns)
        except (MigrationStateError, MigrationNotFound, LockTimeout) as exc:
            raise fail(exc) from exc
    kept = "dropped" if drop_columns else f"kept in {m.new_column} (no longer followed)"
    click.echo(f"vectorizer {name} dropped; its vectors {kept}")
