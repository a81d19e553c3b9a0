"""`embedq vectorize ...`: bind a table so its vector column follows its text for good."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

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
def add_cmd(
    name: str,
    table: str,
    id_column: str,
    text_column: str | None,
    template: str | None,
    vector_column: str,
    model_dir: Path,
    chunk_size: int | None,
) -> None:
    """Bind TABLE as vectorizer NAME: backfill its rows, then embed every insert and every
    change of the text, for good."""
    from embedq_core.catalog import register_model_dir
    from embedq_core.db import make_engine
    from embedq_core.queueing import make_celery
    from migrations.reembed.control import MigrationStateError, start
    from migrations.reembed.locking import LockTimeout
    from migrations.reembed.target import TargetError
    from migrations.reembed.text_source import TemplateError
    from migrations.reembed.vectorizer import draft_vectorizer

    settings = configure(quiet=True)
    engine = make_engine(settings.require_database_url(), pool_size=1)
    with engine.begin() as sa_conn:
        manifest = register_model_dir(sa_conn, model_dir)
    engine.dispose()
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
            )
            m = start(conn, draft, make_celery(settings), lock_policy(settings))
        except (TargetError, TemplateError, MigrationStateError, LockTimeout) as exc:
            raise fail(exc) from exc
        shown = m.display_name(conn)
    click.echo(
        f"vectorizer {m.name}: {shown}.{m.new_column} follows "
        f"{m.template_written or m.text_column} with {m.manifest_id}; {m.rows_total:,} rows"
    )
    click.echo(f"backfilling now; follow it with: embedq vectorize status {m.name}")


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
    from migrations.reembed import row_failures
    from migrations.reembed.progress import progress
    from migrations.reembed.state import MigrationNotFound

    settings = configure(quiet=True)
    with table_connection(settings) as conn:
        try:
            figures = progress(conn, name)
        except MigrationNotFound as exc:
            raise fail(exc) from exc
        failures = row_failures.latest(conn, name)
    if as_json:
        out = figures.as_dict()
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
